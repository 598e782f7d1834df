#!/usr/bin/env python3
"""Log in over TLS with Python's poplib and download every message.

Used by tests/tls.rs. `--mode ssl` connects with poplib.POP3_SSL (implicit TLS, RFC 8314);
`--mode stls` connects in plain text and upgrades with POP3.stls() (RFC 2595). The
SSLContext trusts only --cafile and checks the host name. Then USER/PASS (the password comes
from the environment variable POP3_PASSWORD, not from the arguments), CAPA, STAT, RETR of
every message, QUIT.

Writes each message to OUT/<n>.eml exactly as poplib returns it (lines re-joined with CRLF)
and a summary to OUT/summary.txt:

    tls <version>
    capa <capability>        (one line per capability, after login)
    stat <count> <octets>
    retr <n> <octets reported by poplib>
    quit <QUIT response>
"""

import argparse
import os
import poplib
import ssl


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--mode", choices=["ssl", "stls"], required=True)
    parser.add_argument("--cafile", required=True)
    parser.add_argument("--user", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    context = ssl.create_default_context(cafile=args.cafile)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if args.mode == "ssl":
        pop = poplib.POP3_SSL(args.host, args.port, context=context, timeout=30)
    else:
        pop = poplib.POP3(args.host, args.port, timeout=30)
        pop.stls(context=context)

    os.makedirs(args.out, exist_ok=True)
    summary = [f"tls {pop.sock.version()}"]
    pop.user(args.user)
    pop.pass_(os.environ["POP3_PASSWORD"])
    for name in sorted(pop.capa()):
        summary.append(f"capa {name}")

    count, octets = pop.stat()
    summary.append(f"stat {count} {octets}")
    for number in range(1, count + 1):
        _, lines, reported = pop.retr(number)
        # poplib strips the CRLF of every line and un-stuffs leading dots.
        message = b"\r\n".join(lines) + b"\r\n"
        with open(os.path.join(args.out, f"{number}.eml"), "wb") as f:
            f.write(message)
        summary.append(f"retr {number} {reported}")

    quit_response = pop.quit()
    summary.append(f"quit {quit_response.decode('utf-8', 'replace')}")
    with open(os.path.join(args.out, "summary.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(summary) + "\n")


if __name__ == "__main__":
    main()
