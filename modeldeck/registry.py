"""The S3 model registry.

Layout (design.md §3)::

    models/{name}/{version}/model.onnx     the whole pipeline as one ONNX graph
    models/{name}/{version}/baseline.json  drift baseline (modeldeck.stats)
    models/{name}/{version}/holdout.json   holdout rows, for diffs and the release gate
    models/{name}/{version}/card.json      written last: a version without a card does not exist
    models/{name}/champion.json            the champion pointer

Every write of a version uses ``If-None-Match: *``, so two concurrent registrations can never overwrite
each other's artifacts: the loser moves on to the next number. A failed registration deletes what it
wrote; anything a crashed process left behind has no card, stays invisible, and its number is skipped.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError

from modeldeck.card import ModelCard
from modeldeck.errors import NotFoundError, RegistryError

CARD, MODEL, BASELINE, HOLDOUT, CHAMPION = "card.json", "model.onnx", "baseline.json", "holdout.json", "champion.json"


def utcnow() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Registry:
    """Versioned, immutable model storage over one S3 bucket. The S3 client is injected; it retries
    throttling and transient errors itself (``modeldeck.aws.client_config``)."""

    def __init__(self, s3: Any, bucket: str) -> None:
        self.s3 = s3
        self.bucket = bucket

    @staticmethod
    def key(name: str, version: int | None, filename: str) -> str:
        return f"models/{name}/{filename}" if version is None else f"models/{name}/{version}/{filename}"

    def _get(self, key: str) -> bytes:
        try:
            return bytes(self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read())
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NoSuchBucket"):
                raise NotFoundError(f"s3://{self.bucket}/{key} does not exist") from None
            raise RegistryError(f"cannot read s3://{self.bucket}/{key}: {exc}") from None

    def _put(self, key: str, body: bytes, *, exclusive: bool, content_type: str) -> None:
        extra = {"IfNoneMatch": "*"} if exclusive else {}
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=body, ContentType=content_type, **extra)

    def _keys(self, prefix: str) -> list[str]:
        keys: list[str] = []
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            keys.extend(obj["Key"] for obj in page.get("Contents", []))
        return keys

    def list_models(self) -> list[str]:
        """Names of models that have at least one registered version."""
        names = {key.split("/")[1] for key in self._keys("models/") if key.endswith("/" + CARD)}
        return sorted(names)

    def _version_files(self, name: str) -> dict[int, set[str]]:
        versions: dict[int, set[str]] = {}
        for key in self._keys(f"models/{name}/"):
            parts = key.split("/")
            if len(parts) == 4 and parts[2].isdigit():
                versions.setdefault(int(parts[2]), set()).add(parts[3])
        return versions

    def list_versions(self, name: str) -> list[int]:
        """Registered versions (those with a card), ascending."""
        return sorted(v for v, files in self._version_files(name).items() if CARD in files)

    def get_card(self, name: str, version: int) -> ModelCard:
        try:
            return ModelCard.from_json(self._get(self.key(name, version, CARD)))
        except NotFoundError:
            raise NotFoundError(f"model {name!r} has no version {version}") from None

    def latest(self, name: str) -> int:
        versions = self.list_versions(name)
        if not versions:
            raise NotFoundError(f"model {name!r} has no registered versions")
        return versions[-1]

    def get_model_bytes(self, card: ModelCard) -> bytes:
        """The ONNX artifact of a version, verified against the card's SHA-256."""
        data = self._get(self.key(card.name, card.version, MODEL))
        digest = sha256(data)
        if digest != card.onnx_sha256:
            raise RegistryError(
                f"model {card.name} v{card.version}: artifact SHA-256 {digest[:12]}… does not "
                f"match the card's {card.onnx_sha256[:12]}…; refusing to use it"
            )
        return data

    def get_json(self, name: str, version: int, filename: str) -> Any:
        return json.loads(self._get(self.key(name, version, filename)))

    def find_by_fingerprint(self, name: str, fingerprint: str) -> ModelCard | None:
        for version in reversed(self.list_versions(name)):
            card = self.get_card(name, version)
            if card.fingerprint == fingerprint:
                return card
        return None

    def register(self, card: ModelCard, model: bytes, files: dict[str, Any]) -> tuple[ModelCard, bool]:
        """Store a new immutable version; return its card and whether it was created.

        Registering content that is already registered (same spec, data and artifact) returns the
        existing version, so a retried pipeline never creates a duplicate.
        """
        if sha256(model) != card.onnx_sha256:
            raise RegistryError("the artifact does not match its card's SHA-256; nothing was registered")
        existing = self.find_by_fingerprint(card.name, card.fingerprint)
        if existing is not None:
            return existing, False
        parent = self.get_champion(card.name)
        taken = self._version_files(card.name)
        version = max(taken, default=0) + 1
        while True:
            try:
                self._put(
                    self.key(card.name, version, MODEL), model, exclusive=True, content_type="application/octet-stream"
                )
                break
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") != "PreconditionFailed":
                    raise RegistryError(f"cannot write model {card.name} v{version}: {exc}") from None
                version += 1
        written = [self.key(card.name, version, MODEL)]
        final = card.with_version(version, parent, utcnow())
        try:
            for filename, payload in files.items():
                key = self.key(card.name, version, filename)
                self._put(
                    key,
                    json.dumps(payload, separators=(",", ":")).encode(),
                    exclusive=True,
                    content_type="application/json",
                )
                written.append(key)
            self._put(
                self.key(card.name, version, CARD), final.to_json(), exclusive=True, content_type="application/json"
            )
        except BaseException:
            self._delete(written)
            raise
        return final, True

    def _delete(self, keys: list[str]) -> None:
        for key in keys:
            # Leftovers have no card, so they stay invisible; their number is skipped.
            with contextlib.suppress(ClientError):
                self.s3.delete_object(Bucket=self.bucket, Key=key)

    def get_champion(self, name: str) -> int | None:
        try:
            return int(json.loads(self._get(self.key(name, None, CHAMPION)))["version"])
        except NotFoundError:
            return None

    def champion_record(self, name: str) -> dict[str, Any] | None:
        try:
            return json.loads(self._get(self.key(name, None, CHAMPION)))
        except NotFoundError:
            return None

    def set_champion(self, name: str, version: int, reason: str = "") -> dict[str, Any]:
        """Point the champion at a registered version, remembering the previous one for rollback."""
        self.get_card(name, version)
        previous = self.get_champion(name)
        record = {"version": version, "previous": previous, "updated_at": utcnow(), "reason": reason}
        self._put(
            self.key(name, None, CHAMPION),
            json.dumps(record).encode(),
            exclusive=False,
            content_type="application/json",
        )
        return record
