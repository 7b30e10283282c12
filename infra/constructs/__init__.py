"""Constructs: each builds one logical unit; stacks compose them."""
