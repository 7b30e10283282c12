"""S3 in the local cloud: moto's, with AWS's rule for a read that overlaps a write of the same key.

"Amazon S3 data consistency model" (S3 User Guide): updates to a single key are atomic; a GET concurrent with
a PUT to the same key returns either the old data or the new, never an error. moto disposes of the replaced
object's buffer as soon as the new one is stored, so a GET already holding the old object (another thread: a
CLI following a release while the release Lambda rewrites ``releases/{model}/last.json``) failed with
"I/O operation on closed file". Here a replaced object keeps its buffer until nothing refers to it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def atomic_object_updates() -> Iterator[None]:
    """While the local cloud runs, an object replaced by a write stays readable by the requests that already
    hold it (its buffer is closed when the last of them lets go), and reads of one object do not interleave."""
    from unittest import mock

    from moto.s3.models import FakeKey

    original_dispose = FakeKey.dispose
    compute_etag: Any = FakeKey.__dict__["etag"].fget

    def dispose(key: Any, garbage: bool = False) -> None:
        if garbage:  # the last reference is gone (``__del__``): now the buffer can close
            original_dispose(key, garbage)
        else:
            key.disposed = True

    def etag(key: Any) -> str:
        # moto computes an ETag by seeking and reading the shared buffer, as ``value`` does under the key's lock:
        # without the lock, two concurrent GETs of one key could read each other's position.
        with key.lock:
            return str(compute_etag(key))

    with mock.patch.object(FakeKey, "dispose", dispose), mock.patch.object(FakeKey, "etag", property(etag)):
        yield
