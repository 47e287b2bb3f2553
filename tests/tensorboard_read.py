"""An independent reader of TensorBoard event files (stdlib only): checks every record's
framing and masked CRC-32C, decodes the Event protobufs, and compares the scalars with the
run's metrics.jsonl. usage: tensorboard_read.py EVENT_FILE METRICS_JSONL"""
import json
import struct
import sys


def crc32c(data):
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def masked(crc):
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def varint(buf, i):
    shift = value = 0
    while True:
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            return value, i


def fields(buf):
    """(field number, wire type, value) of a protobuf message."""
    i = 0
    while i < len(buf):
        k, i = varint(buf, i)
        field, wire = k >> 3, k & 7
        if wire == 0:
            v, i = varint(buf, i)
        elif wire == 1:
            v, i = buf[i:i + 8], i + 8
        elif wire == 5:
            v, i = buf[i:i + 4], i + 4
        elif wire == 2:
            n, i = varint(buf, i)
            v, i = buf[i:i + n], i + n
        else:
            raise ValueError(f"wire type {wire}")
        yield field, wire, v


def main():
    data = open(sys.argv[1], "rb").read()
    i, events = 0, []
    while i < len(data):
        header = data[i:i + 8]
        (n,) = struct.unpack("<Q", header)
        (hcrc,) = struct.unpack("<I", data[i + 8:i + 12])
        assert hcrc == masked(crc32c(header)), f"length crc at byte {i}"
        body = data[i + 12:i + 12 + n]
        (bcrc,) = struct.unpack("<I", data[i + 12 + n:i + 16 + n])
        assert bcrc == masked(crc32c(body)), f"data crc at byte {i}"
        events.append(body)
        i += 16 + n
    first = {f: v for f, _, v in fields(events[0])}
    assert first[3] == b"brain.Event:2", first
    scalars = {}
    for e in events[1:]:
        ev = {f: v for f, _, v in fields(e)}
        struct.unpack("<d", ev[1])  # wall time, a double
        step = ev[2]
        for f, _, value in fields(ev[5]):  # Summary.value
            assert f == 1
            v = {f2: x for f2, _, x in fields(value)}
            scalars[(v[1].decode(), step)] = struct.unpack("<f", v[2])[0]
    checked, expected = 0, set()
    for line in open(sys.argv[2]):
        record = json.loads(line)
        prefix = "eval/" if "val_loss" in record or "mc_acc" in record else "train/"
        for name, value in record.items():
            if name == "step" or not isinstance(value, (int, float)):  # null (non-finite), a skip's reason
                continue
            expected.add((prefix + name, record["step"]))
            got = scalars[(prefix + name, record["step"])]
            assert abs(got - value) <= 1e-6 * abs(value) + 1e-30 or struct.pack("<f", value) == struct.pack("<f", got), \
                (name, record["step"], got, value)
            checked += 1
    assert set(scalars) == expected, sorted(set(scalars) ^ expected)[:5]  # and nothing else
    print(f"tensorboard_read: {len(events)} events, {len(scalars)} scalars; {checked} values match metrics.jsonl")


if __name__ == "__main__":
    main()
