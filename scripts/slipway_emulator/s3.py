"""S3 conditional writes as atomic as S3's.

moto checks a PutObject's If-Match / If-None-Match (and a DeleteObject's
If-Match) and then writes, with nothing between the two, while its server
answers each request on its own thread: two writers holding the same ETag
can both pass the check, and one update is lost. S3 makes the check and
the write one step, and the store's every guarantee rests on that (config
changes, the deploy lock, release numbers). Here every object write of a
request (put, copy, delete, completing a multipart upload) runs under one
lock, so a condition holds until its write is done.
"""

import threading

from moto.s3 import responses

PATCHED = [
    (responses.S3Response, "put_object"),
    (responses.S3Response, "copy_object"),
    (responses.S3Response, "delete_object"),
    (responses.S3Response, "_key_response_post"),
]

_writes = threading.RLock()


def _atomic(original):
    def write(self, *args, **kwargs):
        with _writes:
            return original(self, *args, **kwargs)

    write.__name__ = original.__name__
    return write


def install() -> None:
    for owner, name in PATCHED:
        setattr(owner, name, _atomic(getattr(owner, name)))
