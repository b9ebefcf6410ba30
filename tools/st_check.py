#!/usr/bin/env python3
"""st_check.py: the Python half of the safetensors interop test (tests/test_safetensors_python.sh).

  st_check.py check FILE   verify a file written by lcm (the interop_write test of test_safetensors):
                           layout, then every tensor through the safetensors package's own strict
                           reader and through safetensors.numpy, against the values computed here
  st_check.py write DIR    write files with the safetensors package for lcm to read; prints one line
                           "FILE <path> <comma-separated tensor names>" per file, or "SKIP <reason>"

The tensors and their values are defined twice, here and in tests/test_safetensors.c (interop_value);
every value is exact in its dtype, so both sides compare bit for bit. Exit status 0 when all is well,
1 with a message on stderr otherwise.
"""
import json
import struct
import sys

import numpy as np
import safetensors
import safetensors.numpy

NOTE = "h\u00e9llo \"quoted\"\n\tend"
METADATA = {"format": "pt", "note": NOTE}
# Name, safetensors dtype, shape, in the order lcm adds them.
TENSORS = [
    ("f32", "F32", (2, 3)),
    ("bf16", "BF16", (3,)),
    ("f16", "F16", (4,)),
    ("f64", "F64", (3,)),
    ("i64", "I64", (3,)),
    ("i32", "I32", (2, 2)),
    ("u8", "U8", (5,)),
    ("scalar", "F32", ()),
    ("empty", "F32", (0, 3)),
]


def expected(name, shape):
    """The values of an interop tensor as a numpy array (bf16 as its uint16 bit patterns)."""
    n = int(np.prod(shape, dtype=np.int64))
    i = np.arange(n)
    if name == "f32":
        v = (i.astype(np.float32) - np.float32(2.5)) * np.float32(0.75)
    elif name == "bf16":
        f = np.float32(1.5) - np.float32(1.75) * i.astype(np.float32)
        bits = f.view(np.uint32)
        if np.any(bits & 0xFFFF):
            raise AssertionError("bf16 interop values must be exact in bf16")
        v = (bits >> 16).astype(np.uint16)
    elif name == "f16":
        v = (i.astype(np.float32) * np.float32(0.5) - np.float32(1.0)).astype(np.float16)
    elif name == "f64":
        v = 0.1 * (i + 1).astype(np.float64)
    elif name == "i64":
        v = (i.astype(np.int64) - 1) * 10000000000
    elif name == "i32":
        v = (7 * i - 3).astype(np.int32)
    elif name == "u8":
        v = (50 * i + 3).astype(np.uint8)
    elif name == "scalar":
        v = np.array([3.25], dtype=np.float32)[:n]
    elif name == "empty":
        v = np.zeros(0, dtype=np.float32)
    else:
        raise KeyError(name)
    return v.reshape(shape)


def no_duplicates(pairs):
    keys = [k for k, _ in pairs]
    if len(keys) != len(set(keys)):
        raise AssertionError(f"duplicate keys in header object: {keys}")
    return dict(pairs)  # keeps the document order


def check_layout(raw):
    """Header length a multiple of 8, space padding, __metadata__ first, tensors in lcm's order,
    data contiguous and ending at the end of the file."""
    (n,) = struct.unpack("<Q", raw[:8])
    assert n % 8 == 0, f"header length {n} is not a multiple of 8"
    header = raw[8 : 8 + n]
    body = header.rstrip(b" ")
    assert len(header) - len(body) < 8, "more than 7 bytes of padding"
    obj = json.loads(body.decode("utf-8"), object_pairs_hook=no_duplicates)
    keys = list(obj)
    want = ["__metadata__"] + [t[0] for t in TENSORS]
    assert keys == want, f"header keys {keys}, expected {want}"
    assert obj["__metadata__"] == METADATA, f"metadata {obj['__metadata__']!r}"
    end = 0
    for name in keys[1:]:
        info = obj[name]
        begin, stop = info["data_offsets"]
        assert begin == end, f"{name} starts at {begin}, previous tensor ends at {end}"
        end = stop
    assert 8 + n + end == len(raw), f"tensors end at {8 + n + end}, file has {len(raw)} bytes"


def check(path):
    with open(path, "rb") as f:
        raw = f.read()
    check_layout(raw)
    # The safetensors package's own (Rust) reader validates the file and hands back raw bytes, which
    # covers bf16 (numpy has no bf16 type).
    got = {name: info for name, info in safetensors.deserialize(raw)}
    assert sorted(got) == sorted(t[0] for t in TENSORS), f"tensors {sorted(got)}"
    for name, dtype, shape in TENSORS:
        info = got[name]
        assert info["dtype"] == dtype, f"{name}: dtype {info['dtype']}, expected {dtype}"
        assert tuple(info["shape"]) == shape, f"{name}: shape {info['shape']}, expected {shape}"
        want = expected(name, shape)
        assert bytes(info["data"]) == want.astype(want.dtype.newbyteorder("<")).tobytes(), f"{name}: bytes differ"
    # And through the numpy front end, which every non-bf16 dtype supports.
    with safetensors.safe_open(path, framework="numpy") as f:
        assert f.metadata() == METADATA, f"metadata {f.metadata()!r}"
        for name, dtype, shape in TENSORS:
            if dtype == "BF16":
                continue
            a, want = f.get_tensor(name), expected(name, shape)
            assert a.dtype == want.dtype and a.shape == want.shape, f"{name}: {a.dtype}{a.shape}"
            assert np.array_equal(a, want), f"{name}: values {a!r}, expected {want!r}"


def write_bf16(path, arrays):
    """bf16 through the package's low-level serializer (its API changed across versions)."""
    if hasattr(safetensors, "TensorSpec"):
        specs = {
            k: safetensors.TensorSpec(dtype="bfloat16", shape=list(a.shape), data_ptr=a.ctypes.data, data_len=a.nbytes)
            for k, a in arrays.items()
        }
    else:
        specs = {k: {"dtype": "bfloat16", "shape": list(a.shape), "data": a.tobytes()} for k, a in arrays.items()}
    safetensors.serialize_file(specs, path, metadata=METADATA)


def write(directory):
    numpy_tensors = {name: expected(name, shape) for name, dtype, shape in TENSORS if dtype != "BF16"}
    path = f"{directory}/py_numpy.safetensors"
    safetensors.numpy.save_file(numpy_tensors, path, metadata=METADATA)
    print(f"FILE {path} {','.join(numpy_tensors)}")
    bf16 = {name: expected(name, shape) for name, dtype, shape in TENSORS if dtype == "BF16"}
    path = f"{directory}/py_bf16.safetensors"
    try:
        write_bf16(path, bf16)
    except Exception as e:  # an API this script does not know: say so rather than fail the interop test
        print(f"SKIP cannot write bf16 with safetensors {safetensors.__version__}: {e!r}")
        return
    print(f"FILE {path} {','.join(bf16)}")


def main(argv):
    if len(argv) != 3 or argv[1] not in ("check", "write"):
        print(__doc__, file=sys.stderr)
        return 2
    try:
        (check if argv[1] == "check" else write)(argv[2])
    except AssertionError as e:
        print(f"st_check.py {argv[1]} {argv[2]}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
