"""CDK app: typed config, constructs and stacks."""
