#!/usr/bin/env python3
"""Guess one account's password over POP3S as a distributed attacker would.

Used by tests/abuse.rs. Runs --parallel workers for --duration seconds. Each attempt opens a
new TLS connection to one of the --port servers from the next of --sources local addresses
(127.N.0.1, 127.N.0.2, ... for --source-net N), sends USER and PASS with the next candidate password (one per
line on standard input), and hangs up if no answer arrives within --hang-up seconds, the
way an attacker who reads a slow answer as "wrong" would. Writes a JSON summary to standard
output:

    {"attempts": n, "answered": n, "found": "password or null", "refused": n,
     "abandoned": n, "errors": n, "elapsed": seconds, "answer_times": [seconds, ...]}

"answered" counts attempts whose credential the server judged (+OK or -ERR [AUTH]);
"refused" those answered -ERR without judging (the throttle's [SYS/TEMP]); "abandoned" those
the attacker hung up on.
"""

import argparse
import itertools
import json
import socket
import ssl
import sys
import threading
import time


def attempt(context, port, source, login, password, hang_up):
    raw = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))
    with context.wrap_socket(raw, server_hostname="127.0.0.1") as conn:
        reader = conn.makefile("rb")
        reader.readline()
        conn.sendall(f"USER {login}\r\n".encode())
        reader.readline()
        conn.sendall(f"PASS {password}\r\n".encode())
        conn.settimeout(hang_up)
        try:
            return reader.readline().decode(errors="replace").strip()
        except (socket.timeout, TimeoutError):
            return None


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, action="append", required=True)
    parser.add_argument("--cafile", required=True)
    parser.add_argument("--login", required=True)
    parser.add_argument("--sources", type=int, default=250)
    parser.add_argument("--source-net", type=int, default=1)
    parser.add_argument("--parallel", type=int, default=32)
    parser.add_argument("--duration", type=float, required=True)
    parser.add_argument("--hang-up", type=float, default=0.6)
    args = parser.parse_args()

    context = ssl.create_default_context(cafile=args.cafile)
    candidates = iter([line.rstrip("\n") for line in sys.stdin if line.strip()])
    sources = itertools.cycle(
        f"127.{args.source_net}.{i // 250}.{1 + i % 250}" for i in range(args.sources)
    )
    ports = itertools.cycle(args.port)
    lock = threading.Lock()
    summary = {"attempts": 0, "answered": 0, "found": None, "refused": 0,
               "abandoned": 0, "errors": 0, "answer_times": []}
    started = time.monotonic()
    deadline = started + args.duration

    def worker():
        while time.monotonic() < deadline:
            with lock:
                if summary["found"] is not None:
                    return
                password = next(candidates, None)
                source, port = next(sources), next(ports)
                if password is None:
                    return
                summary["attempts"] += 1
            try:
                answer = attempt(context, port, source, args.login, password, args.hang_up)
            except (OSError, ssl.SSLError):
                answer = "error"
            with lock:
                if answer is None:
                    summary["abandoned"] += 1
                elif answer == "error":
                    summary["errors"] += 1
                elif answer.startswith("+OK"):
                    summary["answered"] += 1
                    summary["found"] = password
                    summary["answer_times"].append(round(time.monotonic() - started, 3))
                elif answer.startswith("-ERR [AUTH]"):
                    summary["answered"] += 1
                    summary["answer_times"].append(round(time.monotonic() - started, 3))
                else:
                    summary["refused"] += 1

    threads = [threading.Thread(target=worker) for _ in range(args.parallel)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    summary["elapsed"] = round(time.monotonic() - started, 3)
    json.dump(summary, sys.stdout)


if __name__ == "__main__":
    main()
