#!/usr/bin/env python3
"""Writes the seed inputs of the fuzz targets into seeds/<target>/ (run from tests/fuzz).

Each input starts with the target's parameter bytes (see the target's docs), then the
bytes a peer sends."""
import base64
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def write(target, name, data):
    folder = os.path.join(HERE, target)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, name), "wb") as f:
        f.write(data)


# pop3_commands: line limit - 8, (SASL limit - line limit) / 4, seed (2), largest chunk - 1.
pop3 = (
    b"USER alice\r\nPASS secret word\r\nSTAT\r\nLIST\r\nLIST 1\r\nRETR 1\r\nTOP 1 10\r\n"
    b"UIDL\r\nUIDL 2\r\nDELE 1\r\nNOOP\r\nRSET\r\nCAPA\r\n"
    b"APOP mrose c4c9334bac560ecc979e58001b3e22fb\r\nAUTH\r\nAUTH PLAIN\r\n"
    + base64.b64encode(b"\0alice\0secret") + b"\r\nAUTH LOGIN\r\n*\r\nAUTH PLAIN =\r\n"
    b"AUTH XOAUTH2 dXNlcj1hAWF1dGg9QmVhcmVyIHQBAQ==\r\nSTLS\r\nretr 0\r\nQUIT x\nQUIT\r\n"
)
write("pop3_commands", "session", bytes([247, 64, 0x34, 0x12, 15]) + pop3)
write("pop3_commands", "small_limits",
      bytes([8, 2, 7, 0, 3]) + b"NOOP\r\nUSER " + b"a" * 40 + b"\r\nAUTH PLAIN " + b"QUJD" * 4 + b"\r\nSTAT\n")

# sasl: mechanism (PLAIN, LOGIN, CRAM-MD5, OAUTHBEARER, XOAUTH2), flags (1: initial
# response, 2: login and secret written by the client's encoder, 4: authzid / extra pairs).
write("sasl", "plain_initial", bytes([0, 1]) + b"\0tim\0tanstaaf")
write("sasl", "login", bytes([1, 0]) + b"tim\xfftanstaaf")
write("sasl", "cram_md5", bytes([2, 0]) + b"tim b913a602c7eda7a495b4e6e7334d3890")
write("sasl", "oauthbearer", bytes([3, 1]) + b"n,a=user@example.com,\x01host=server.example.com\x01auth=Bearer vF9dft4qmTc2\x01\x01")
write("sasl", "xoauth2", bytes([4, 1]) + b"user=someuser@example.com\x01auth=Bearer ya29.vF9dft4qmTc2\x01\x01")
for mechanism in range(5):
    write("sasl", f"well_formed_{mechanism}", bytes([mechanism, 2 | 4 | (mechanism & 1)]) + b"a=b,c@example.com\xffs3cret")

# lmtp_session: line limit, size limit (2, little-endian), seed (2), largest chunk - 1,
# flags (1: start inside DATA).
lmtp = (
    b"LHLO mx.example\r\nMAIL FROM:<a@b.example> SIZE=20 BODY=8BITMIME\r\n"
    b"RCPT TO:<c@d.example>\r\nRCPT TO:<\"odd >name\"@d.example> NOTIFY=NEVER\r\n"
    b"DATA\r\nSubject: x\r\n\r\n..stuffed\nbare lf\rbare cr\r\n.\r\n"
    b"MAIL FROM:<>\r\nRCPT TO:<@r1,@r2:e@f.example>\r\nVRFY x\r\nNOOP\r\nRSET\r\nHELO x\r\n"
    b"DATA\r\n.\r\nQUIT\r\n"
)
write("lmtp_session", "session", bytes([255]) + struct.pack("<H", 1000) + bytes([0x34, 0x12, 15, 0]) + lmtp)
write("lmtp_session", "in_data", bytes([40]) + struct.pack("<H", 12) + bytes([5, 0, 2, 1])
      + b"0123456789\r\n.\n.\r\n..\r\n.\r\nQUIT\r\n")

# proxy_header: cap (2, little-endian), seed (2), largest read - 1, flags (1: full cap).
params = struct.pack("<H", 4096) + bytes([0x34, 0x12, 7, 1])
write("proxy_header", "v1_tcp4", params + b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 110\r\nCAPA\r\n")
write("proxy_header", "v1_tcp6", params + b"PROXY TCP6 2001:db8::1 2001:db8::2 56324 995\r\n\x16\x03\x01")
write("proxy_header", "v1_unknown", params + b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n")
signature = b"\r\n\r\n\0\r\nQUIT\n"
write("proxy_header", "v2_local", params + signature + bytes([0x20, 0x00, 0, 0]))
ipv4 = bytes([192, 0, 2, 1, 198, 51, 100, 2]) + struct.pack(">HH", 56324, 110)
tlv = bytes([0x02]) + struct.pack(">H", 11) + b"example.com"
write("proxy_header", "v2_tcp4_tlv", params + signature + bytes([0x21, 0x11])
      + struct.pack(">H", len(ipv4 + tlv)) + ipv4 + tlv + b"CAPA\r\n")
ipv6 = bytes(range(32)) + struct.pack(">HH", 1, 2)
write("proxy_header", "v2_tcp6", params + signature + bytes([0x21, 0x21]) + struct.pack(">H", len(ipv6)) + ipv6)
write("proxy_header", "not_a_header", params + b"CAPA\r\n")
