#!/usr/bin/env python3
"""Mint HS256 session JWTs with the standard library only.

    jwt.py SECRET_FILE PREFIX START COUNT [OUT]

writes COUNT tokens, one per line, for users PREFIX<START> .. PREFIX<START+COUNT-1>
with claims {"sub": user, "roles": ["editor"], "iat": now, "exp": now+86400}
(the gateway needs `iat` to bound a session's lifetime)
to OUT (default stdout).
"""
import base64, hashlib, hmac, json, sys, time


def b64(b: bytes) -> bytes:
    return base64.urlsafe_b64encode(b).rstrip(b"=")


def main() -> None:
    secret_file, prefix, start, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    out = open(sys.argv[5], "w") if len(sys.argv) > 5 else sys.stdout
    with open(secret_file, "rb") as f:
        secret = f.read().rstrip(b"\r\n")
    header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    iat = int(time.time())
    exp = iat + 86400
    mac = hmac.new(secret, digestmod=hashlib.sha256)
    lines = []
    for i in range(start, start + count):
        claims = {"sub": f"{prefix}{i}", "roles": ["editor"], "iat": iat, "exp": exp}
        signing_input = header + b"." + b64(json.dumps(claims, separators=(",", ":")).encode())
        m = mac.copy()
        m.update(signing_input)
        lines.append((signing_input + b"." + b64(m.digest())).decode())
    out.write("\n".join(lines) + "\n")
    out.close()


if __name__ == "__main__":
    main()
