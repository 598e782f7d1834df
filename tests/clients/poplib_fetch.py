#!/usr/bin/env python3
"""Download every message of a POP3 maildrop with Python's poplib.

Used by tests/clients.rs. Logs in with USER/PASS, runs STAT, UIDL, LIST and RETR for every
message, optionally DELE for every message, then QUIT. Writes each message to OUT/<n>.eml
exactly as poplib returns it (lines re-joined with CRLF) and a summary to OUT/summary.txt:

    stat <count> <octets>
    uidl <n> <unique-id>
    list <n> <octets>
    retr <n> <octets reported by poplib>
    quit <QUIT response>

The password is read from the environment variable POP3_PASSWORD, not from the arguments.
"""

import argparse
import os
import poplib


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--user", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--delete", action="store_true", help="DELE every message before QUIT")
    args = parser.parse_args()

    os.makedirs(args.out, exist_ok=True)
    summary = []
    pop = poplib.POP3(args.host, args.port, timeout=30)
    pop.user(args.user)
    pop.pass_(os.environ["POP3_PASSWORD"])

    count, octets = pop.stat()
    summary.append(f"stat {count} {octets}")

    _, uidl_lines, _ = pop.uidl()
    for line in uidl_lines:
        number, uid = line.decode("ascii").split(" ", 1)
        summary.append(f"uidl {number} {uid}")

    _, list_lines, _ = pop.list()
    for line in list_lines:
        number, size = line.decode("ascii").split(" ", 1)
        summary.append(f"list {number} {size}")

    for number in range(1, count + 1):
        _, lines, reported = pop.retr(number)
        # poplib strips the CRLF of every line and un-stuffs leading dots.
        message = b"\r\n".join(lines) + b"\r\n"
        with open(os.path.join(args.out, f"{number}.eml"), "wb") as f:
            f.write(message)
        summary.append(f"retr {number} {reported}")
        if args.delete:
            pop.dele(number)

    quit_response = pop.quit()
    summary.append(f"quit {quit_response.decode('utf-8', 'replace')}")
    with open(os.path.join(args.out, "summary.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(summary) + "\n")


if __name__ == "__main__":
    main()
