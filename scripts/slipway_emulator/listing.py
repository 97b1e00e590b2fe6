"""S3 listings that cost what S3's cost: a page, not the bucket.

moto answers ListObjectsV2 by copying and filtering every key in the
bucket, then sorting what matched, so a listing of one page of one prefix
grows with everything else the bucket holds (about 40 ms at 42,000 keys).
S3 indexes keys by name: a listing costs its page. The store's reads are
built on that (index folders listed newest first, a page at a time), and
`scripts/bench-store` measures them, so here each bucket keeps its key
names sorted and a listing bisects to its prefix (or its StartAfter or
continuation token), walks forward, skips past each rolled-up
CommonPrefix, and stops one entry past MaxKeys. What it answers is what
moto's own listing answers (test_listing.py compares the two).
"""

import bisect
import threading

from moto.s3 import models, utils

PATCHED = [
    (models.S3Backend, "list_objects_v2"),
    (utils._VersionedKeyStore, "__setitem__"),
    (utils._VersionedKeyStore, "setlist"),
    (utils._VersionedKeyStore, "pop"),
    (utils._VersionedKeyStore, "__delitem__"),
    (utils._VersionedKeyStore, "clear"),
]

_lock = threading.RLock()
# Past every character a key name can hold: folder + _LAST sorts after
# every name under folder.
_LAST = "\U0010ffff"


def _names(store) -> list:
    """The store's key names, sorted; rebuilt when it disagrees with the
    store in length (a change that came some other way)."""
    names = getattr(store, "_slipway_names", None)
    if names is None or len(names) != dict.__len__(store):
        names = sorted(dict.keys(store))
        store._slipway_names = names
    return names


def _tracking(original):
    def change(self, *args, **kwargs):
        with _lock:
            result = original(self, *args, **kwargs)
            names = _names(self)
            if args and isinstance(args[0], str):
                name = args[0]
                i = bisect.bisect_left(names, name)
                present = i < len(names) and names[i] == name
                if dict.__contains__(self, name) and not present:
                    names.insert(i, name)
                elif not dict.__contains__(self, name) and present:
                    del names[i]
            return result

    change.__name__ = original.__name__
    change._slipway_listing = True
    return change


def _walk(store, prefix: str, delimiter, after, want: int) -> list:
    """Up to `want` entries (keys, then folder names as strings), in
    order, of `prefix`, after `after`."""
    out = []
    with _lock:
        names = _names(store)
        i = bisect.bisect_left(names, prefix)
        if after:
            i = max(i, bisect.bisect_right(names, after))
        last_folder = None
        while i < len(names) and len(out) < want:
            name = names[i]
            if not name.startswith(prefix):
                break
            rest = name[len(prefix):]
            if delimiter and delimiter in rest:
                folder = prefix + rest.split(delimiter)[0] + delimiter
                if folder != last_folder and (not after or folder > after):
                    out.append(folder)
                last_folder = folder
                i = max(i + 1, bisect.bisect_left(names, folder + _LAST))
                continue
            key = store.get(name)
            if key is not None and not isinstance(key, models.FakeDeleteMarker):
                out.append(key)
            i += 1
    return out


def _list_objects_v2(
    self, bucket, prefix, delimiter, continuation_token, start_after, max_keys
):
    if isinstance(bucket, models.FakeTableStorageBucket):
        raise models.MethodNotAllowed()
    after = (
        self._pagination_tokens.get(continuation_token)
        if continuation_token
        else start_after
    )
    entries = _walk(bucket.keys, prefix or "", delimiter, after, max_keys + 1)
    return self._truncate_result(entries, max_keys)


def install() -> None:
    store = utils._VersionedKeyStore
    for _, name in PATCHED[1:]:
        method = getattr(store, name)
        if not getattr(method, "_slipway_listing", False):
            setattr(store, name, _tracking(method))
    models.S3Backend.list_objects_v2 = _list_objects_v2
