"""The emulator's ListObjectsV2 answers what S3 answers: every key and
CommonPrefix of a prefix, in order, a page at a time, after StartAfter,
without deleted keys; and keeps answering so as keys come and go.

Run: .venv/bin/python -m unittest scripts/slipway_emulator/test_listing.py
"""

import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from slipway_emulator.emulator_test import EmulatorTest  # noqa: E402

BUCKET = "listing"


def expected(names, prefix, delimiter, after=None):
    """Every entry a listing of `prefix` holds, by the definition."""
    entries = set()
    for name in names:
        if not name.startswith(prefix):
            continue
        rest = name[len(prefix):]
        if delimiter and delimiter in rest:
            entries.add(prefix + rest.split(delimiter)[0] + delimiter)
        else:
            entries.add(name)
    return sorted(e for e in entries if after is None or e > after)


class ListingTest(EmulatorTest):
    def listed(self, prefix, delimiter, page, start_after=None):
        s3 = self.client("s3")
        args = {"Bucket": BUCKET, "Prefix": prefix, "MaxKeys": page}
        if delimiter:
            args["Delimiter"] = delimiter
        if start_after:
            args["StartAfter"] = start_after
        got = []
        while True:
            out = s3.list_objects_v2(**args)
            entries = [o["Key"] for o in out.get("Contents", [])] + [
                p["Prefix"] for p in out.get("CommonPrefixes", [])
            ]
            self.assertLessEqual(len(entries), page)
            got += sorted(entries)
            if not out["IsTruncated"]:
                return got
            args.pop("StartAfter", None)
            args["ContinuationToken"] = out["NextContinuationToken"]

    def test_every_listing_is_what_s3_answers_as_keys_come_and_go(self):
        s3 = self.client("s3")
        s3.create_bucket(Bucket=BUCKET)
        names = set()
        for app in ["a", "b", "bb", "c"]:
            for n in range(30):
                for name in [
                    f"{app}/prod/index/deploys/{n:04}",
                    f"{app}/prod/deploys/d{n}.json",
                    f"{app}/prod/deploys/d{n}/cancel",
                    f"{app}/staging/releases/r{n}/release.json",
                ]:
                    names.add(name)
        names |= {"top", "a/", "a//double", "é/unicode", "a/prod/index/deploys/~"}
        for name in sorted(names):
            s3.put_object(Bucket=BUCKET, Key=name, Body=b"x")
        # Some go, one twice (a second version first), and come back.
        gone = {n for n in names if n.endswith("7.json") or "/r3/" in n}
        s3.put_object(Bucket=BUCKET, Key="a/prod/deploys/d7.json", Body=b"y")
        for name in gone:
            s3.delete_object(Bucket=BUCKET, Key=name)
        names -= gone
        s3.put_object(Bucket=BUCKET, Key="b/prod/deploys/d17.json", Body=b"z")
        names.add("b/prod/deploys/d17.json")

        cases = [
            ("", "/", 2),
            ("", None, 1000),
            ("a/", "/", 1),
            ("a/prod/", "/", 3),
            ("a/prod/deploys/", "/", 7),
            ("a/prod/deploys/", None, 7),
            ("a/prod/index/deploys/", "/", 20),
            ("b", "/", 5),
            ("c/staging/releases/", "/", 4),
            ("nothing/", "/", 10),
        ]
        for prefix, delimiter, page in cases:
            with self.subTest(prefix=prefix, delimiter=delimiter, page=page):
                self.assertEqual(
                    self.listed(prefix, delimiter, page),
                    expected(names, prefix, delimiter),
                )
        after = "a/prod/deploys/d2"
        self.assertEqual(
            self.listed("a/prod/", "/", 2, start_after="a/prod/deploys/"),
            expected(names, "a/prod/", "/", after="a/prod/deploys/"),
        )
        self.assertEqual(
            self.listed("a/prod/deploys/", None, 3, start_after=after),
            expected(names, "a/prod/deploys/", None, after=after),
        )


if __name__ == "__main__":
    unittest.main()
