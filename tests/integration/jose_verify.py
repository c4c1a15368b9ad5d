#!/usr/bin/env python3
"""Verifies kmsd's compact JWS tokens the way an outside verifier would:
knowing only the JWKS URL, with a standard JOSE library (jwcrypto) and no
kmsd code. It is the verifier of docs/SIGNING.md:

  - keep the JWKS in a cache together with its ETag;
  - pick the key by the token's kid AND the algorithm the JWKS entry names
    (RFC 8725 section 3.1: the algorithm comes from the key, the header's
    alg must agree with it);
  - on an unknown kid, refetch the JWKS once (a conditional GET with
    If-None-Match), then give up;
  - never accept "none" or an algorithm the key was not published for.

Usage:
  jose_verify.py --jwks-url URL [--stale-jwks FILE --stale-etag ETAG]
                 [--expect-fetches N] TOKENS [BAD_TOKENS]

TOKENS has one "<label> <compact JWS>" a line; each must verify, and its
payload must be a JSON object with "iss": "kmsd-interop" and the "alg" the
header names. BAD_TOKENS (optional) has tokens that must NOT verify.
--stale-jwks starts from a JWKS saved earlier (a verifier that fetched it
before the keys were rotated). Ends with "jose: N passed, N failed".
"""
import argparse
import json
import sys
import urllib.error
import urllib.request

from jwcrypto import jwk, jws

ALGS = {"ES256", "RS256", "PS256", "EdDSA"}


class JwksCache:
    """A JWKS kept in memory with its ETag."""

    def __init__(self, url, stale_doc=None, stale_etag=None):
        self.url = url
        self.doc = stale_doc
        self.etag = stale_etag
        self.fetches = 0
        self.not_modified = 0

    def fetch(self):
        req = urllib.request.Request(self.url)
        if self.etag:
            req.add_header("If-None-Match", self.etag)
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                body = resp.read()
                self.etag = resp.headers.get("ETag")
                self.doc = json.loads(body)
                self.fetches += 1
        except urllib.error.HTTPError as e:
            if e.code != 304:
                raise
            self.not_modified += 1

    def find(self, kid, alg):
        for k in (self.doc or {}).get("keys", []):
            if k.get("kid") == kid and k.get("alg") == alg:
                return k
        return None

    def key_for(self, kid, alg):
        entry = self.find(kid, alg)
        if entry is None:
            # An unknown kid: the set may have changed (a rotation).
            self.fetch()
            entry = self.find(kid, alg)
        return entry


def verify(cache, token):
    """Returns (ok, message)."""
    t = jws.JWS()
    try:
        t.deserialize(token)
        header = t.jose_header
    except Exception as e:  # noqa: BLE001 - any parse failure is a no
        return False, "not a JWS: %r" % e
    alg, kid = header.get("alg"), header.get("kid")
    if alg not in ALGS or not isinstance(kid, str):
        return False, "alg %r or kid %r not acceptable" % (alg, kid)
    entry = cache.key_for(kid, alg)
    if entry is None:
        return False, "no key %s for %s in the JWKS" % (kid, alg)
    if entry.get("use") != "sig":
        return False, "key %s is not for signatures" % kid
    key = jwk.JWK(**entry)
    if key.thumbprint() != kid:
        return False, "kid %s is not the RFC 7638 thumbprint" % kid
    try:
        # The algorithm is the key's, as published; not the header's.
        t.verify(key, alg=entry["alg"])
    except Exception as e:  # noqa: BLE001
        return False, "signature: %r" % e
    payload = json.loads(t.payload)
    if payload.get("iss") != "kmsd-interop" or payload.get("alg") != alg:
        return False, "unexpected payload %r" % payload
    return True, "%s kid %s" % (alg, kid)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--jwks-url", required=True)
    ap.add_argument("--stale-jwks")
    ap.add_argument("--stale-etag")
    ap.add_argument("--expect-fetches", type=int)
    ap.add_argument("tokens")
    ap.add_argument("bad_tokens", nargs="?")
    args = ap.parse_args()

    stale = None
    if args.stale_jwks:
        with open(args.stale_jwks, encoding="utf-8") as f:
            stale = json.load(f)
    cache = JwksCache(args.jwks_url, stale, args.stale_etag)
    if stale is None:
        cache.fetch()

    passed = failed = 0

    def result(ok, what):
        nonlocal passed, failed
        if ok:
            passed += 1
            print("ok - " + what)
        else:
            failed += 1
            print("FAIL - " + what)

    with open(args.tokens, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            label, token = line.split()
            ok, msg = verify(cache, token)
            result(ok, "%s verifies: %s" % (label, msg))
    if args.bad_tokens:
        with open(args.bad_tokens, encoding="utf-8") as f:
            for line in f:
                if not line.strip():
                    continue
                label, token = line.split()
                ok, msg = verify(cache, token)
                result(not ok, "%s is refused: %s" % (label, msg))
    if args.expect_fetches is not None:
        result(cache.fetches == args.expect_fetches,
               "JWKS fetched %d time(s) after the stale copy, expected %d"
               % (cache.fetches, args.expect_fetches))
    # The cached set is current: a conditional GET answers 304.
    before = cache.not_modified
    cache.fetch()
    result(cache.not_modified == before + 1,
           "a conditional GET with the cached ETag answers 304")

    print("jose: %d passed, %d failed" % (passed, failed))
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
