"""RFC 6455 conformance cases in the spirit of the Autobahn TestSuite (which
needs Python 2, absent from Debian 12): hand-made frames on a raw socket.

Each case is a function case(target) that opens its own connection(s) with
target.connect() (a harness.RawWs after the 101, the CONNECTION message not
read yet) or sends a raw handshake with target.port, and raises
AssertionError when the server misbehaves. test_rfc6455.py runs every case
against a bridge and against a balancer relaying to a bridge.

What a cloudpush server answers to a valid message is an envelope (there is
no echo): a HEARTBEAT gets a HEARTBEAT_ACK, a binary message an ERROR
envelope, a text that is not JSON an ERROR envelope. The protocol errors
must fail the connection with a close frame carrying 1002 (or 1007 for text
that is not UTF-8), never with a bare TCP drop.

CASES maps a name to (family, function, expected_failure): expected_failure
is None, or why libwebsockets 4.1.6 (a Debian package, not patched) cannot
pass it, naming the lws function that decides. A reason starting with
"deflate:" applies only to servers that negotiate permessage-deflate (the
bridge; the balancer offers no extension).
"""

import base64
import contextlib
import json
import os
import socket
import struct
import time

import harness as h

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0, 1, 2, 8, 9, 10
PROTOCOL_ERROR, INVALID_PAYLOAD, TOO_BIG = 1002, 1007, 1009


# ---------------------------------------------------------------- frames

def frame(opcode, payload=b"", fin=True, rsv=0, mask=True, mask_key=None, length=None):
    """One frame, bytes. rsv is the 3 RSV bits (4 = RSV1, 2 = RSV2,
    1 = RSV3); length overrides the payload length field."""
    if isinstance(payload, str):
        payload = payload.encode("utf-8")
    b0 = (0x80 if fin else 0) | (rsv & 7) << 4 | opcode
    n = len(payload) if length is None else length
    mbit = 0x80 if mask else 0
    if n < 126:
        head = struct.pack("!BB", b0, mbit | n)
    elif n < 65536:
        head = struct.pack("!BBH", b0, mbit | 126, n)
    else:
        head = struct.pack("!BBQ", b0, mbit | 127, n)
    if not mask:
        return head + payload
    key = os.urandom(4) if mask_key is None else mask_key
    return head + key + h._mask_fast(payload, key) if payload else head + key


def heartbeat(mid):
    return json.dumps({"msgType": h.MSG_HEARTBEAT, "messageId": mid},
                      separators=(",", ":"), ensure_ascii=False).encode()


def padded_heartbeat(mid, size):
    """A HEARTBEAT of exactly size bytes (JSON whitespace as padding)."""
    body = heartbeat(mid)
    if size < len(body):
        raise ValueError("size too small")
    return body[:-1] + b" " * (size - len(body)) + b"}"


# ---------------------------------------------------------------- reading

def next_frame(ws, timeout=5.0):
    """(fin, opcode, payload), or None when the TCP connection ended."""
    try:
        return ws.recv_frame(timeout)
    except socket.timeout:
        raise AssertionError("no frame within %.1fs" % timeout)
    except (ConnectionError, OSError):
        return None


def expect_close(ws, codes, timeout=5.0):
    """Reads until the server's close frame, skipping data frames (e.g. the
    CONNECTION envelope) and control frames; asserts its code is in codes.
    A TCP close without a close frame fails."""
    if isinstance(codes, int):
        codes = (codes,)
    deadline = time.monotonic() + h.t(timeout)
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError("no close frame within %.1fs (wanted %s)" % (timeout, codes))
        f = next_frame(ws, left)
        if f is None:
            raise AssertionError("TCP connection closed without a close frame (wanted %s)"
                                 % (codes,))
        fin, op, payload = f
        if op == OP_CLOSE:
            code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
            assert code in codes, "close code %r, wanted %s (payload %r)" % (code, codes,
                                                                              payload)
            return code, payload[2:]


def expect_envelope(ws, pred, what, timeout=5.0, pongs=None):
    """Reads (reassembled) text messages until one satisfies pred; a close
    frame or a TCP close fails. Pong payloads seen are appended to pongs."""
    deadline = time.monotonic() + h.t(timeout)
    parts = []
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError("no %s within %.1fs" % (what, timeout))
        f = next_frame(ws, left)
        if f is None:
            raise AssertionError("TCP connection closed while waiting for %s" % what)
        fin, op, payload = f
        if op == OP_CLOSE:
            raise AssertionError("closed (%r) while waiting for %s" % (payload[:40], what))
        if op == OP_PING:
            ws.sock.sendall(frame(OP_PONG, payload))
            continue
        if op == OP_PONG:
            if pongs is not None:
                pongs.append(payload)
            continue
        parts.append(payload)
        if not fin:
            continue
        data, parts = b"".join(parts), []
        try:
            m = json.loads(data.decode("utf-8"))
        except ValueError:
            raise AssertionError("not a JSON text message: %r" % data[:100])
        if pred(m):
            return m


def expect_ack(ws, mid, timeout=5.0, pongs=None):
    return expect_envelope(ws, lambda m: m.get("msgType") == h.MSG_HEARTBEAT_ACK
                           and m.get("messageId") == mid,
                           "HEARTBEAT_ACK for %r" % mid, timeout, pongs)


def expect_error(ws, fragment, timeout=5.0):
    return expect_envelope(ws, lambda m: m.get("msgType") == h.MSG_ERROR
                           and fragment in m.get("resultMsg", ""),
                           "an ERROR envelope saying %r" % fragment, timeout)


def expect_pongs(ws, payloads, timeout=5.0):
    """The pongs answering payloads, in order (data frames skipped)."""
    got = []
    deadline = time.monotonic() + h.t(timeout)
    while len(got) < len(payloads):
        left = deadline - time.monotonic()
        if left <= 0:
            break
        try:
            f = ws.recv_frame(left)
        except socket.timeout:
            break
        except (ConnectionError, OSError):
            raise AssertionError("TCP closed after %d of %d pongs" % (len(got), len(payloads)))
        fin, op, payload = f
        if op == OP_CLOSE:
            raise AssertionError("closed after %d of %d pongs: %r" % (len(got), len(payloads),
                                                                       payload))
        if op == OP_PONG:
            got.append(payload)
    assert got == list(payloads), "pongs %r, wanted %r" % (got, list(payloads))


def expect_silence_then_end(ws, seconds=1.0):
    """Nothing but a close frame or the end of the connection may come."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            f = ws.recv_frame(max(0.01, deadline - time.monotonic()))
        except socket.timeout:
            return
        except (ConnectionError, OSError):
            return
        fin, op, payload = f
        assert op == OP_CLOSE, "a frame after the close: opcode %d %r" % (op, payload[:60])


def alive(ws, mid="alive"):
    """The connection still serves: a heartbeat is acknowledged."""
    ws.sock.sendall(frame(OP_TEXT, heartbeat(mid)))
    expect_ack(ws, mid)


# ---------------------------------------------------------------- the cases

CASES = {}


def case(family, name, xfail=None):
    def register(fn):
        if name in CASES:
            raise ValueError("duplicate case " + name)
        CASES[name] = (family, fn, xfail)
        return fn
    return register


def add(family, name, fn, xfail=None):
    case(family, name, xfail)(fn)


# -- text and binary messages

def _ack_of_size(size):
    def run(target):
        ws = target.connect()
        ws.sock.sendall(frame(OP_TEXT, padded_heartbeat("len%d" % size, size)))
        expect_ack(ws, "len%d" % size)
    return run


for _n in (40, 125, 126, 127, 65535, 65536):
    add("text", "text_length_%d" % _n, _ack_of_size(_n))


@case("text", "text_empty")
def _(target):
    ws = target.connect()
    ws.sock.sendall(frame(OP_TEXT, b""))
    expect_error(ws, "invalid JSON")
    alive(ws)


@case("text", "text_not_json_stays_open")
def _(target):
    ws = target.connect()
    ws.sock.sendall(frame(OP_TEXT, "hello"))
    expect_error(ws, "invalid JSON")
    alive(ws)


@case("text", "text_byte_by_byte")
def _(target):
    ws = target.connect()
    for b in frame(OP_TEXT, heartbeat("bytewise")):
        ws.sock.sendall(bytes([b]))
    expect_ack(ws, "bytewise")


@case("text", "text_two_in_one_segment")
def _(target):
    ws = target.connect()
    ws.sock.sendall(frame(OP_TEXT, heartbeat("one")) + frame(OP_TEXT, heartbeat("two")))
    expect_ack(ws, "one")
    expect_ack(ws, "two")


@case("text", "text_zero_mask_key")
def _(target):
    ws = target.connect()
    ws.sock.sendall(frame(OP_TEXT, heartbeat("zeromask"), mask_key=b"\0\0\0\0"))
    expect_ack(ws, "zeromask")


@case("text", "text_too_big_1009")
def _(target):
    ws = target.connect()
    ws.sock.sendall(frame(OP_TEXT, padded_heartbeat("big", 65537)))
    expect_close(ws, TOO_BIG)


@case("binary", "binary_refused_with_error")
def _(target):
    ws = target.connect()
    ws.sock.sendall(frame(OP_BINARY, b"\x00\x01\xff"))
    expect_error(ws, "binary frames are not supported")
    alive(ws)


@case("binary", "binary_empty")
def _(target):
    ws = target.connect()
    ws.sock.sendall(frame(OP_BINARY, b""))
    expect_error(ws, "binary frames are not supported")
    alive(ws)


@case("binary", "binary_length_65536")
def _(target):
    ws = target.connect()
    ws.sock.sendall(frame(OP_BINARY, os.urandom(65536)))
    expect_error(ws, "binary frames are not supported")
    alive(ws)


@case("binary", "binary_fragmented")
def _(target):
    ws = target.connect()
    ws.sock.sendall(frame(OP_BINARY, b"ab", fin=False) + frame(OP_CONT, b"cd"))
    expect_error(ws, "binary frames are not supported")
    alive(ws)


UNMASKED_XFAIL = ("lws_ws_rx_sm() (lib/roles/ws/ops-ws.c) records whether a client frame is "
                  "masked but never checks it, and no callback or API exposes the mask bit")


def _unmasked(opcode, payload):
    def run(target):
        ws = target.connect()
        ws.sock.sendall(frame(opcode, payload, mask=False))
        expect_close(ws, PROTOCOL_ERROR)
    return run


add("framing", "unmasked_text_1002", _unmasked(OP_TEXT, heartbeat("unmasked")), UNMASKED_XFAIL)
add("framing", "unmasked_binary_1002", _unmasked(OP_BINARY, b"xyz"), UNMASKED_XFAIL)
add("framing", "unmasked_ping_1002", _unmasked(OP_PING, b"p"), UNMASKED_XFAIL)


def _reserved_opcode(opcode):
    def run(target):
        ws = target.connect()
        ws.sock.sendall(frame(opcode, b"reserved"))
        expect_close(ws, PROTOCOL_ERROR)
    return run


for _op in (3, 4, 5, 6, 7, 11, 12, 13, 14, 15):
    add("framing", "reserved_opcode_%d_1002" % _op, _reserved_opcode(_op))


def _rsv(opcode, rsv, payload):
    def run(target):
        ws = target.connect()
        ws.sock.sendall(frame(opcode, payload, rsv=rsv))
        expect_close(ws, PROTOCOL_ERROR)
    return run


add("framing", "rsv1_text_no_extension_1002", _rsv(OP_TEXT, 4, heartbeat("r1")))
add("framing", "rsv2_text_1002", _rsv(OP_TEXT, 2, heartbeat("r2")))
add("framing", "rsv3_text_1002", _rsv(OP_TEXT, 1, heartbeat("r3")))
add("framing", "rsv_all_binary_1002", _rsv(OP_BINARY, 7, b"bin"))
add("framing", "rsv1_ping_no_extension_1002", _rsv(OP_PING, 4, b"p"))
add("framing", "rsv2_close_1002", _rsv(OP_CLOSE, 2, struct.pack("!H", 1000)))


@case("framing", "length_top_bit_set_1002")
def _(target):
    ws = target.connect()
    ws.sock.sendall(struct.pack("!BBQ", 0x81, 0x80 | 127, 1 << 63) + b"\0\0\0\0")
    expect_close(ws, PROTOCOL_ERROR)


# -- fragmentation

def _fragments(pieces):
    def run(target):
        ws = target.connect()
        mid = "frag%d" % len(pieces)
        body = heartbeat(mid)
        cuts = [round(len(body) * i / len(pieces)) for i in range(len(pieces) + 1)]
        out = b""
        for i in range(len(pieces)):
            chunk = body[cuts[i]:cuts[i + 1]]
            out += frame(OP_TEXT if i == 0 else OP_CONT, chunk, fin=i == len(pieces) - 1)
        ws.sock.sendall(out)
        expect_ack(ws, mid)
    return run


add("fragmentation", "fragments_2", _fragments(range(2)))
add("fragmentation", "fragments_10", _fragments(range(10)))


@case("fragmentation", "fragments_one_byte_each")
def _(target):
    ws = target.connect()
    body = heartbeat("bytes")
    out = b"".join(frame(OP_TEXT if i == 0 else OP_CONT, body[i:i + 1], fin=i == len(body) - 1)
                   for i in range(len(body)))
    ws.sock.sendall(out)
    expect_ack(ws, "bytes")


@case("fragmentation", "fragments_with_empty_ones")
def _(target):
    ws = target.connect()
    body = heartbeat("empties")
    ws.sock.sendall(frame(OP_TEXT, b"", fin=False) + frame(OP_CONT, body[:5], fin=False)
                    + frame(OP_CONT, b"", fin=False) + frame(OP_CONT, body[5:], fin=False)
                    + frame(OP_CONT, b"", fin=True))
    expect_ack(ws, "empties")


@case("fragmentation", "fragments_separate_segments")
def _(target):
    ws = target.connect()
    body = heartbeat("slowfrag")
    ws.sock.sendall(frame(OP_TEXT, body[:7], fin=False))
    time.sleep(0.2)
    ws.sock.sendall(frame(OP_CONT, body[7:], fin=True))
    expect_ack(ws, "slowfrag")


@case("fragmentation", "ping_between_fragments")
def _(target):
    ws = target.connect()
    body = heartbeat("pingmid")
    ws.sock.sendall(frame(OP_TEXT, body[:6], fin=False) + frame(OP_PING, b"mid")
                    + frame(OP_CONT, body[6:]))
    pongs = []
    expect_ack(ws, "pingmid", pongs=pongs)
    if not pongs:
        expect_pongs(ws, [b"mid"])
    else:
        assert pongs == [b"mid"], pongs


@case("fragmentation", "continuation_without_start_1002")
def _(target):
    ws = target.connect()
    ws.sock.sendall(frame(OP_CONT, heartbeat("nostart")))
    expect_close(ws, PROTOCOL_ERROR)


@case("fragmentation", "continuation_nonfinal_without_start_1002")
def _(target):
    ws = target.connect()
    ws.sock.sendall(frame(OP_CONT, b"{", fin=False))
    expect_close(ws, PROTOCOL_ERROR)


@case("fragmentation", "continuation_after_final_1002")
def _(target):
    ws = target.connect()
    ws.sock.sendall(frame(OP_TEXT, heartbeat("done")) + frame(OP_CONT, b"x"))
    expect_close(ws, PROTOCOL_ERROR)


@case("fragmentation", "new_text_during_fragmented_1002")
def _(target):
    ws = target.connect()
    ws.sock.sendall(frame(OP_TEXT, b"{", fin=False) + frame(OP_TEXT, heartbeat("interleaved")))
    expect_close(ws, PROTOCOL_ERROR)


@case("fragmentation", "new_binary_during_fragmented_1002")
def _(target):
    ws = target.connect()
    ws.sock.sendall(frame(OP_TEXT, b"{", fin=False) + frame(OP_BINARY, b"x"))
    expect_close(ws, PROTOCOL_ERROR)


def _fragmented_control(opcode, payload):
    def run(target):
        ws = target.connect()
        ws.sock.sendall(frame(opcode, payload, fin=False))
        expect_close(ws, PROTOCOL_ERROR)
    return run


add("fragmentation", "fragmented_ping_1002", _fragmented_control(OP_PING, b"frag"))
add("fragmentation", "fragmented_pong_1002", _fragmented_control(OP_PONG, b"frag"))
add("fragmentation", "fragmented_close_1002",
    _fragmented_control(OP_CLOSE, struct.pack("!H", 1000)))


def _rsv1_continuation(target):
    # permessage-deflate negotiated, so lws itself lets RSV1 through.
    ws = target.connect(deflate=True)
    ws.sock.sendall(frame(OP_TEXT, b"{", fin=False) + frame(OP_CONT, b"}", rsv=4))
    expect_close(ws, PROTOCOL_ERROR)


add("fragmentation", "rsv1_continuation_with_deflate_1002", _rsv1_continuation)


@case("fragmentation", "rsv1_continuation_no_extension_1002")
def _(target):
    ws = target.connect()
    ws.sock.sendall(frame(OP_TEXT, b"{", fin=False) + frame(OP_CONT, b"}", rsv=4))
    expect_close(ws, PROTOCOL_ERROR)


# -- control frames

def _ping(payload):
    def run(target):
        ws = target.connect()
        ws.sock.sendall(frame(OP_PING, payload))
        expect_pongs(ws, [payload])
        alive(ws)
    return run


add("control", "ping_empty", _ping(b""))
add("control", "ping_text_payload", _ping(b"hello"))
add("control", "ping_binary_payload", _ping(bytes(range(0, 250, 2))[:125]))
add("control", "ping_125_bytes", _ping(b"p" * 125))


@case("control", "ping_126_bytes_1002")
def _(target):
    ws = target.connect()
    ws.sock.sendall(frame(OP_PING, b"p" * 126))
    expect_close(ws, PROTOCOL_ERROR)


@case("control", "pong_126_bytes_1002")
def _(target):
    ws = target.connect()
    ws.sock.sendall(frame(OP_PONG, b"p" * 126))
    expect_close(ws, PROTOCOL_ERROR)


@case("control", "close_126_bytes_1002")
def _(target):
    ws = target.connect()
    ws.sock.sendall(frame(OP_CLOSE, struct.pack("!H", 1000) + b"r" * 124))
    expect_close(ws, PROTOCOL_ERROR)


@case("control", "unsolicited_pong_ignored")
def _(target):
    ws = target.connect()
    ws.sock.sendall(frame(OP_PONG, b"unsolicited"))
    alive(ws)


@case("control", "ping_byte_by_byte")
def _(target):
    ws = target.connect()
    for b in frame(OP_PING, b"slowping"):
        ws.sock.sendall(bytes([b]))
    expect_pongs(ws, [b"slowping"])


PING_BURST_XFAIL = ("lws_ws_rx_sm() (lib/roles/ws/ops-ws.c) keeps one pending pong and drops "
                    "every ping that arrives before it is sent ('DROP PING since one "
                    "pending'); pings never reach a callback")


@case("control", "ten_pings_ten_pongs", PING_BURST_XFAIL)
def _(target):
    ws = target.connect()
    payloads = [("ping-%d" % i).encode() for i in range(10)]
    ws.sock.sendall(b"".join(frame(OP_PING, p) for p in payloads))
    expect_pongs(ws, payloads)


@case("control", "ten_pings_apart_ten_pongs")
def _(target):
    ws = target.connect()
    payloads = [("apart-%d" % i).encode() for i in range(10)]
    for p in payloads:
        ws.sock.sendall(frame(OP_PING, p))
        expect_pongs(ws, [p])


@case("control", "rsv1_ping_with_deflate_1002",
      "deflate: lws_ws_rx_sm() (lib/roles/ws/ops-ws.c) accepts RSV1 on any frame once "
      "permessage-deflate is negotiated, and pings never reach a callback")
def _(target):
    ws = target.connect(deflate=True)
    ws.sock.sendall(frame(OP_PING, b"p", rsv=4))
    expect_close(ws, PROTOCOL_ERROR)


# -- close

def _close_echo(code, reason=b""):
    def run(target):
        ws = target.connect()
        ws.sock.sendall(frame(OP_CLOSE, struct.pack("!H", code) + reason))
        got, _ = expect_close(ws, code)
        assert got == code
    return run


@case("close", "close_empty_payload")
def _(target):
    ws = target.connect()
    ws.sock.sendall(frame(OP_CLOSE, b""))
    expect_close(ws, (None, 1000))


add("close", "close_1000_with_reason", _close_echo(1000, b"bye"))
add("close", "close_reason_123_bytes", _close_echo(1000, b"r" * 123))
add("close", "close_reason_utf8", _close_echo(1000, "au revoir \u00e9\u20ac".encode()))
for _c in (1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999):
    add("close", "close_code_%d_echoed" % _c, _close_echo(_c))


def _close_invalid(code):
    def run(target):
        ws = target.connect()
        ws.sock.sendall(frame(OP_CLOSE, struct.pack("!H", code)))
        expect_close(ws, PROTOCOL_ERROR)
    return run


for _c in (0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535):
    add("close", "close_code_%d_1002" % _c, _close_invalid(_c))


@case("close", "close_one_byte_payload_1002")
def _(target):
    ws = target.connect()
    ws.sock.sendall(frame(OP_CLOSE, b"\x03"))
    expect_close(ws, PROTOCOL_ERROR)


@case("close", "close_reason_invalid_utf8")
def _(target):
    ws = target.connect()
    ws.sock.sendall(frame(OP_CLOSE, struct.pack("!H", 1000) + b"\xce\xba\xe1\xbd\xb9\xcf\x83"
                          b"\xce\xbc\xce\xb5\xed\xa0\x80\x65\x64\x69\x74\x65\x64"))
    # 1007 is the precise answer; Autobahn (7.5.1) accepts 1002 as well,
    # which is what lws's failure path allows us to send.
    expect_close(ws, (PROTOCOL_ERROR, INVALID_PAYLOAD))


@case("close", "frame_after_close_not_answered")
def _(target):
    ws = target.connect()
    ws.sock.sendall(frame(OP_CLOSE, struct.pack("!H", 1000))
                    + frame(OP_TEXT, heartbeat("afterclose")))
    expect_close(ws, 1000)
    expect_silence_then_end(ws)


@case("close", "frame_after_close_separate_segment_not_answered")
def _(target):
    ws = target.connect()
    ws.sock.sendall(frame(OP_CLOSE, struct.pack("!H", 1000)))
    time.sleep(0.05)
    with contextlib.suppress(OSError):
        ws.sock.sendall(frame(OP_TEXT, heartbeat("late")) + frame(OP_PING, b"late"))
    expect_close(ws, 1000)
    expect_silence_then_end(ws)


@case("close", "ping_after_close_not_answered")
def _(target):
    ws = target.connect()
    ws.sock.sendall(frame(OP_CLOSE, struct.pack("!H", 1000)) + frame(OP_PING, b"late"))
    expect_close(ws, 1000)
    expect_silence_then_end(ws)


@case("close", "message_then_close_answered_in_order")
def _(target):
    ws = target.connect()
    ws.sock.sendall(frame(OP_TEXT, heartbeat("beforeclose")))
    expect_ack(ws, "beforeclose")
    ws.sock.sendall(frame(OP_CLOSE, struct.pack("!H", 1000)))
    expect_close(ws, 1000)


# -- UTF-8 of text messages

def _utf8_ok(text):
    def run(target):
        ws = target.connect()
        ws.sock.sendall(frame(OP_TEXT, heartbeat(text)))
        expect_ack(ws, text)
    return run


add("utf8", "utf8_two_byte", _utf8_ok("caf\u00e9"))
add("utf8", "utf8_three_byte", _utf8_ok("\u20ac\u2603"))
add("utf8", "utf8_four_byte", _utf8_ok("\U0001d11e\U0001f600"))
add("utf8", "utf8_max_codepoint", _utf8_ok("\U0010ffff"))


@case("utf8", "utf8_split_inside_codepoint")
def _(target):
    ws = target.connect()
    body = heartbeat("\u20acsplit")
    cut = body.index("\u20ac".encode()) + 1
    ws.sock.sendall(frame(OP_TEXT, body[:cut], fin=False) + frame(OP_CONT, body[cut:]))
    expect_ack(ws, "\u20acsplit")


def _utf8_bad(raw, fragmented=False):
    def run(target):
        ws = target.connect()
        body = b'{"msgType":3,"messageId":"' + raw + b'"}'
        if fragmented:
            ws.sock.sendall(frame(OP_TEXT, body[:10], fin=False) + frame(OP_CONT, body[10:]))
        else:
            ws.sock.sendall(frame(OP_TEXT, body))
        expect_close(ws, INVALID_PAYLOAD)
    return run


add("utf8", "utf8_invalid_byte_ff_1007", _utf8_bad(b"\xff"))
add("utf8", "utf8_overlong_slash_1007", _utf8_bad(b"\xc0\xaf"))
add("utf8", "utf8_surrogate_1007", _utf8_bad(b"\xed\xa0\x80"))
add("utf8", "utf8_above_max_1007", _utf8_bad(b"\xf4\x90\x80\x80"))
add("utf8", "utf8_lone_continuation_1007", _utf8_bad(b"\x80"))
add("utf8", "utf8_invalid_in_second_fragment_1007", _utf8_bad(b"ok\xfe", fragmented=True))


@case("utf8", "utf8_truncated_at_end_1007")
def _(target):
    ws = target.connect()
    ws.sock.sendall(frame(OP_TEXT, b'{"msgType":3}\xe2\x82'))
    expect_close(ws, INVALID_PAYLOAD)


@case("utf8", "utf8_truncated_at_end_of_fragments_1007")
def _(target):
    ws = target.connect()
    ws.sock.sendall(frame(OP_TEXT, b'{"msgType":3}', fin=False) + frame(OP_CONT, b"\xe2\x82"))
    expect_close(ws, INVALID_PAYLOAD)


# -- handshake

def raw_request(port, lines, timeout=5.0):
    """Sends a request head; returns (status line, {lower-name: value},
    body). Fails when the server closes without an answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=h.t(timeout)) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        buf = b""
        deadline = time.monotonic() + h.t(timeout)
        while b"\r\n\r\n" not in buf:
            if time.monotonic() > deadline:
                raise AssertionError("no answer within %.1fs: %r" % (timeout, buf[:200]))
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                raise AssertionError("connection closed without an answer: %r" % buf[:200])
            buf += chunk
        head, body = buf.split(b"\r\n\r\n", 1)
        lines_in = head.decode("iso-8859-1").split("\r\n")
        headers = {}
        for line in lines_in[1:]:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        length = int(headers.get("content-length", "0"))
        while len(body) < length and time.monotonic() < deadline:
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
        return lines_in[0], headers, body


def upgrade_lines(target, method="GET", version="13", key=True, connection="Upgrade",
                  extra=(), query=None):
    q = query if query is not None else "channelId=" + h.uniq("hs")
    lines = ["%s /ws?%s HTTP/1.1" % (method, q), "Host: 127.0.0.1:%d" % target.port,
             "Upgrade: websocket"]
    if connection is not None:
        lines.append("Connection: %s" % connection)
    if key is True:
        lines.append("Sec-WebSocket-Key: %s" % base64.b64encode(os.urandom(16)).decode())
    elif key:
        lines.append("Sec-WebSocket-Key: %s" % key)
    if version is not None:
        lines.append("Sec-WebSocket-Version: %s" % version)
    lines.extend(extra)
    return lines


def expect_refusal(target, lines, statuses, code=None):
    status_line, headers, body = raw_request(target.port, lines)
    assert status_line.startswith("HTTP/1.1 "), "status line %r is not HTTP/1.1" % status_line
    status = int(status_line.split()[1])
    assert status in statuses, "status %d, wanted %s: %r" % (status, statuses, body[:200])
    assert headers.get("content-type", "").startswith("application/json"), headers
    obj = json.loads(body)
    assert obj.get("success") is False, obj
    if code:
        assert obj.get("code") == code, obj
    return status, headers, obj


def _refused(statuses, code=None, **kw):
    def run(target):
        expect_refusal(target, upgrade_lines(target, **kw), statuses, code)
    return run


@case("handshake", "version_8_426")
def _(target):
    status, headers, _ = expect_refusal(target, upgrade_lines(target, version="8"), (426,),
                                        "unsupported_version")
    assert headers.get("sec-websocket-version") == "13", headers


add("handshake", "version_14_426", _refused((426,), "unsupported_version", version="14"))
add("handshake", "version_missing_426", _refused((426,), "unsupported_version", version=None))
add("handshake", "version_garbage_426", _refused((426,), "unsupported_version", version="13x"))
add("handshake", "post_upgrade_refused", _refused((400, 405), method="POST"))
add("handshake", "key_missing_400", _refused((400,), "bad_handshake", key=None))
add("handshake", "key_too_short_400", _refused((400,), "bad_handshake", key="c2hvcnQ="))
add("handshake", "key_not_base64_400",
    _refused((400,), "bad_handshake", key="!!!!!!!!!!!!!!!!!!!!!!=="))
add("handshake", "connection_without_upgrade_400",
    _refused((400,), "bad_handshake", connection="keep-alive"))


@case("handshake", "accept_key_and_subprotocol")
def _(target):
    ws = target.connect(extra_headers={"Sec-WebSocket-Protocol": "other, cloudpush"})
    assert ws.headers.get("sec-websocket-protocol") == "cloudpush", ws.headers
    assert ws.headers.get("upgrade", "").lower() == "websocket", ws.headers
    alive(ws)


add("handshake", "subprotocol_unknown_400",
    _refused((400,), "unsupported_protocol", extra=["Sec-WebSocket-Protocol: chat"]))
add("handshake", "subprotocol_long_entry_first_400",
    _refused((400,), "unsupported_protocol",
             extra=["Sec-WebSocket-Protocol: %s, cloudpush" % ("t" * 64)]))
add("handshake", "subprotocol_upstream_name_400",
    _refused((400,), "unsupported_protocol",
             extra=["Sec-WebSocket-Protocol: cloudpush-upstream, cloudpush"]))


@case("handshake", "subprotocol_token_after_cloudpush")
def _(target):
    ws = target.connect(extra_headers={"Sec-WebSocket-Protocol": "cloudpush, " + "t" * 100})
    assert ws.headers.get("sec-websocket-protocol") == "cloudpush", ws.headers
    alive(ws)


@case("handshake", "connection_header_list")
def _(target):
    ws = target.connect(extra_headers={})
    alive(ws)
    status_line, headers, body = raw_request(
        target.port, upgrade_lines(target, connection="keep-alive, Upgrade"))
    assert status_line.startswith("HTTP/1.1 101"), status_line


@case("handshake", "refusal_is_http11_with_json")
def _(target):
    expect_refusal(target, upgrade_lines(target, query=""), (400,), "missing_channel_id")


@case("handshake", "long_subprotocol_431")
def _(target):
    token = "x" * 130
    expect_refusal(target, upgrade_lines(
        target, extra=["Sec-WebSocket-Protocol: cloudpush, " + token]), (401, 431))


@case("handshake", "long_query_431")
def _(target):
    expect_refusal(target, upgrade_lines(
        target, query="channelId=%s&token=%s" % (h.uniq("q"), "t" * 5120)), (431,),
        "query_too_large")
