#!/usr/bin/env python3
"""parquet_to_lcmd.py: convert parquet files in the reference LCM layout into lcm datasets (.lcmd).

Input: one row per document, columns
  text_sentences             list<string>                           (optional with --no-text)
  text_sentences_sonar_emb   list<fixed_size_list<float>[D]> or list<list<float>>, float32 or float16
  split                      optional string: "train" / "validation" (also "valid", "dev")
Output: OUT.lcmd (+ OUT.text, the sentences) for the training rows (all rows without a split column),
and, when --valid-out names it, VALID.lcmd (+ .text) for the validation rows: the tool writes only the
files it is asked for, so validation rows without --valid-out are an error. Missing output directories
are created. The files are byte for byte what `lcm data import`
writes for the same embeddings (docs/dataset-format.md), written to a temporary name, fsync'ed and
renamed, so they appear complete or not at all. Empty documents are skipped (and counted).

  parquet_to_lcmd.py data/*.parquet -o data/train.lcmd [--valid-out data/valid.lcmd]
                     [--dtype f32|f16|bf16] [--eot eot.npy] [--row-ids] [--no-text]

Needs pyarrow and numpy.
"""
import argparse
import os
import struct
import sys
import zlib

try:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
except ImportError as e:  # pragma: no cover - depends on the machine
    sys.exit(f"parquet_to_lcmd.py: needs numpy and pyarrow ({e}); pip install pyarrow numpy")

EMB_COL = "text_sentences_sonar_emb"
TEXT_COL = "text_sentences"
SPLIT_COL = "split"
TRAIN_NAMES = {"train"}
VALID_NAMES = {"validation", "valid", "dev"}

LCMD_MAGIC = b"LCM-DATA"
LCMD_VERSION = 1
HEADER = 4096
DTYPE_CODE = {"f32": 1, "f16": 2, "bf16": 3}
ELEM = {"f32": 4, "f16": 2, "bf16": 2}
FLAG_SOURCE_IDS, FLAG_EOT = 1, 2
TEXT_MAGIC = b"LCM-TEXT"


class Fail(Exception):
    pass


def to_bf16_bits(x32):
    """fp32 -> bf16 bits, round to nearest even (include/lcm/half.h's lcm_f32_to_bf16; no NaN here)."""
    u = x32.view(np.uint32).astype(np.uint32)
    return ((u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)).astype("<u2")


def store(emb, dtype):
    """Embeddings [n, D] (float32 or float16) as the bytes of the storage dtype, converted exactly as
    lcm data import does: f16 kept as is for f16, everything else through fp32."""
    if dtype == "f16" and emb.dtype == np.float16:
        out = emb.astype("<f2", copy=False)
    else:
        x32 = emb.astype("<f4", copy=False)
        if dtype == "f32":
            out = x32
        elif dtype == "f16":
            out = x32.astype("<f2")
        else:
            out = to_bf16_bits(x32)
    return np.ascontiguousarray(out)


class TextWriter:
    """The text side file (docs/dataset-format.md, "The text side file")."""

    def __init__(self, path):
        self.path = path
        self.tmp = f"{path}.tmp.{os.getpid()}"
        self.f = open(self.tmp, "wb")
        self.f.write(bytes(64))
        self.offsets = [0]
        self.crc = 0

    def add(self, sentence):
        b = sentence.encode("utf-8")
        self.f.write(b)
        self.crc = zlib.crc32(b, self.crc)
        self.offsets.append(self.offsets[-1] + len(b))

    def commit(self):
        text_bytes = self.offsets[-1]
        pad = (8 - (64 + text_bytes) % 8) % 8
        self.f.write(bytes(pad))
        self.crc = zlib.crc32(bytes(pad), self.crc)
        table = np.asarray(self.offsets, dtype="<u8").tobytes()
        self.f.write(table)
        self.crc = zlib.crc32(table, self.crc)
        offsets_off = 64 + text_bytes + pad
        n = len(self.offsets) - 1
        h = bytearray(64)
        struct.pack_into("<8sIIQQQQI", h, 0, TEXT_MAGIC, 1, 0, n, text_bytes, offsets_off,
                         offsets_off + len(table), self.crc)
        struct.pack_into("<I", h, 52, zlib.crc32(bytes(h)))
        self.f.seek(0)
        self.f.write(h)
        commit_file(self.f, self.tmp, self.path)

    def abort(self):
        abort_file(self.f, self.tmp)


def commit_file(f, tmp, path):
    f.flush()
    os.fsync(f.fileno())
    f.close()
    os.replace(tmp, path)
    d = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    try:
        os.fsync(d)
    finally:
        os.close(d)


def abort_file(f, tmp):
    if not f.closed:
        f.close()
    if os.path.exists(tmp):
        os.unlink(tmp)


class DatasetWriter:
    """A .lcmd file: placeholder header page, streamed payload, then the tables and the real header."""

    def __init__(self, path, dtype, with_text):
        self.path, self.dtype = path, dtype
        self.tmp = f"{path}.tmp.{os.getpid()}"
        self.f = open(self.tmp, "wb")
        self.f.write(bytes(HEADER))
        self.dim = None
        self.offsets = [0]
        self.sources = []
        self.payload = 0
        self.text = TextWriter(text_path_for(path)) if with_text else None

    def add(self, emb, sentences, source_id, where):
        n, dim = emb.shape
        if self.dim is None:
            self.dim = dim
        elif dim != self.dim:
            raise Fail(f"{where}: embeddings of dimension {dim}, earlier documents have {self.dim}")
        raw = store(emb, self.dtype)
        bad = ~np.isfinite(raw.view(np.float32) if self.dtype == "f32" else
                           raw.view(np.float16).astype(np.float32) if self.dtype == "f16" else
                           (raw.astype(np.uint32) << np.uint32(16)).view(np.float32))
        if bad.any():
            c, d = map(int, np.argwhere(bad)[0])
            v = float(emb[c, d])
            what = "NaN" if np.isnan(v) else "Inf" if np.isinf(v) else f"{v:g}, too large for {self.dtype},"
            raise Fail(f"{where}: sentence {c}, dimension {d} is {what}; fix or drop that document")
        self.f.write(raw.tobytes())
        self.payload += raw.nbytes
        self.offsets.append(self.offsets[-1] + n)
        if source_id is not None:
            self.sources.append(source_id)
        if self.text is not None:
            for s in sentences:
                self.text.add(s)

    def commit(self, eot):
        n_docs = len(self.offsets) - 1
        if n_docs == 0:
            raise Fail(f"{self.path}: no (non-empty) documents to write")
        if eot is not None and eot.shape[0] != self.dim:
            raise Fail(f"the EOT embedding has dimension {eot.shape[0]} but the embeddings have {self.dim}")
        pad = (8 - (HEADER + self.payload) % 8) % 8
        self.f.write(bytes(pad))
        offsets_off = HEADER + self.payload + pad
        tables = np.asarray(self.offsets, dtype="<u8").tobytes()
        flags, pos = 0, offsets_off + len(tables)
        src_off = src_size = eot_off = eot_size = 0
        if self.sources:
            flags |= FLAG_SOURCE_IDS
            src = np.asarray(self.sources, dtype="<u8").tobytes()
            src_off, src_size = pos, len(src)
            tables += src
            pos += src_size
        if eot is not None:
            flags |= FLAG_EOT
            e = np.ascontiguousarray(eot, dtype="<f4").tobytes()
            eot_off, eot_size = pos, len(e)
            tables += e
            pos += eot_size
        self.f.write(tables)
        h = bytearray(HEADER)
        struct.pack_into("<8sIIIIQQQQQQQQQQQI", h, 0, LCMD_MAGIC, LCMD_VERSION, DTYPE_CODE[self.dtype], self.dim,
                         flags, n_docs, self.offsets[-1], HEADER, self.payload, offsets_off, (n_docs + 1) * 8,
                         src_off, src_size, eot_off, eot_size, pos, zlib.crc32(tables))
        struct.pack_into("<I", h, 116, zlib.crc32(bytes(h)))
        self.f.seek(0)
        self.f.write(h)
        commit_file(self.f, self.tmp, self.path)
        if self.text is not None:
            self.text.commit()
        elif os.path.exists(text_path_for(self.path)):
            os.unlink(text_path_for(self.path))  # it described the dataset this one replaces
        return n_docs

    def abort(self):
        abort_file(self.f, self.tmp)
        if self.text is not None:
            self.text.abort()


def text_path_for(path):
    return (path[:-5] if path.endswith(".lcmd") else path) + ".text"


def embeddings_of(col, row0, name):
    """One batch's embedding column -> (values [concepts, D] float32/float16, lengths per row)."""
    if col.null_count:
        raise Fail(f"{name}: row {row0 + col.is_null().to_numpy(zero_copy_only=False).argmax()} has no embeddings")
    if not (pa.types.is_list(col.type) or pa.types.is_large_list(col.type)):
        raise Fail(f"{name}: column {EMB_COL} is {col.type}, expected a list of embeddings")
    lengths = col.value_lengths().to_numpy(zero_copy_only=False).astype(np.int64)
    inner = col.flatten()
    if pa.types.is_fixed_size_list(inner.type):
        dim = inner.type.list_size
    elif pa.types.is_list(inner.type) or pa.types.is_large_list(inner.type):
        il = inner.value_lengths().to_numpy(zero_copy_only=False)
        if inner.null_count or (len(il) and (il != il[0]).any()):
            raise Fail(f"{name}: embeddings of different lengths (or nulls) in rows {row0}..{row0 + len(col) - 1}")
        dim = int(il[0]) if len(il) else 0
    else:
        raise Fail(f"{name}: column {EMB_COL} holds {inner.type}, expected lists of floats")
    values = inner.flatten()
    if not (pa.types.is_float32(values.type) or pa.types.is_float16(values.type)):
        raise Fail(f"{name}: embeddings are {values.type}; float32 or float16 expected")
    if values.null_count:
        raise Fail(f"{name}: null values inside embeddings in rows {row0}..{row0 + len(col) - 1}")
    arr = values.to_numpy(zero_copy_only=False)
    return arr.reshape(-1, dim) if dim else arr.reshape(0, 0), lengths


def split_of(value, name, row):
    if value in TRAIN_NAMES:
        return 0
    if value in VALID_NAMES:
        return 1
    raise Fail(f"{name}: row {row} has split '{value}'; expected train or validation (valid, dev)")


def convert(args):
    eot = None
    if args.eot:
        eot = np.load(args.eot).astype(np.float32).reshape(-1)
        if not np.isfinite(eot).all():
            raise Fail(f"{args.eot}: the EOT embedding is not finite")
    valid_out = args.valid_out
    writers = [None, None]
    paths = [args.output, valid_out]
    skipped = [0, 0]
    row = 0
    try:
        for name in args.inputs:
            pf = pq.ParquetFile(name)
            cols = [c for c in (EMB_COL, TEXT_COL, SPLIT_COL) if c in pf.schema_arrow.names]
            if EMB_COL not in cols:
                raise Fail(f"{name}: no column {EMB_COL} (columns: {', '.join(pf.schema_arrow.names)})")
            with_text = not args.no_text
            if with_text and TEXT_COL not in cols:
                raise Fail(f"{name}: no column {TEXT_COL}; give --no-text to convert the embeddings alone")
            for batch in pf.iter_batches(batch_size=args.batch_rows, columns=cols):
                emb, lengths = embeddings_of(batch.column(EMB_COL), row, name)
                texts = batch.column(TEXT_COL).to_pylist() if with_text else None
                splits = batch.column(SPLIT_COL).to_pylist() if SPLIT_COL in cols else None
                at = 0
                for i, n in enumerate(lengths):
                    n = int(n)
                    s = split_of(splits[i], name, row) if splits else 0
                    where = f"{name}: row {row}"
                    if with_text and (texts[i] is None or len(texts[i]) != n):
                        raise Fail(f"{where}: {len(texts[i]) if texts[i] is not None else 0} sentences but {n} "
                                   "embeddings")
                    if s == 1 and valid_out is None:
                        raise Fail(f"{where} has split '{splits[i]}': give --valid-out FILE.lcmd for the validation "
                                   "rows (only the files asked for are written)")
                    if n == 0:
                        skipped[s] += 1
                    else:
                        if writers[s] is None:
                            os.makedirs(os.path.dirname(paths[s]) or ".", exist_ok=True)
                            writers[s] = DatasetWriter(paths[s], args.dtype or ("f16" if emb.dtype == np.float16
                                                                                else "f32"), with_text)
                        writers[s].add(emb[at:at + n], texts[i] if with_text else (), row if args.row_ids else None,
                                       where)
                    at += n
                    row += 1
        if writers[0] is None and writers[1] is None:
            raise Fail("no non-empty documents in the input")
        done = []
        for s in (0, 1):
            if writers[s] is not None:
                n = writers[s].commit(eot)
                done.append(f"{paths[s]}: {n} documents, {writers[s].offsets[-1]} concepts, dim {writers[s].dim}, "
                             f"{writers[s].dtype}" + (f" ({skipped[s]} empty documents skipped)" if skipped[s] else ""))
                writers[s] = None
        return done
    finally:
        for w in writers:
            if w is not None:
                w.abort()


def main():
    ap = argparse.ArgumentParser(description="Convert reference-layout parquet files into lcm datasets (.lcmd).")
    ap.add_argument("inputs", nargs="+", help="parquet files, read in order")
    ap.add_argument("-o", "--output", required=True, help="the training dataset to write (.lcmd)")
    ap.add_argument("--valid-out", help="where rows with split=validation go (needed when the input has such rows)")
    ap.add_argument("--dtype", choices=["f32", "f16", "bf16"], help="storage type (default: that of the input)")
    ap.add_argument("--eot", help=".npy with the SONAR embedding of 'End of text.' [D]; without it, no EOT")
    ap.add_argument("--row-ids", action="store_true", help="store each document's input row number as its source id")
    ap.add_argument("--no-text", action="store_true", help="do not write the .text side files")
    ap.add_argument("--batch-rows", type=int, default=1024, help=argparse.SUPPRESS)
    args = ap.parse_args()
    try:
        for line in convert(args):
            print(f"parquet_to_lcmd.py: wrote {line}")
    except (Fail, OSError, pa.ArrowException, UnicodeEncodeError) as e:
        print(f"parquet_to_lcmd.py: error: {e}", file=sys.stderr)
        return 1
    if not args.eot:
        print("note: no --eot given, so the datasets have no EOT concept; train with data.append_eot=false")
    return 0


if __name__ == "__main__":
    sys.exit(main())
