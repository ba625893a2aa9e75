import numpy as np
import pytest
import torch

import sarcodec
from sarcodec.container import (
    HEADER,
    TRAILER,
    ContainerReader,
    atomic_write,
)
from sarcodec.errors import (
    CorruptedFileError,
    FormatError,
    ModelMismatchError,
    NotASarcFileError,
    OutputError,
    TruncatedFileError,
    UnsupportedVersionError,
)

from conftest import small_model


@pytest.fixture(scope="module")
def encoded():
    from sarcodec.data import synthetic_sar

    img = synthetic_sar((96, 130), seed=3)
    img[0:4, 0:4] = np.nan
    m = small_model("residual")
    return m, img, sarcodec.encode(img, m, tile_size=64, metadata={"note": "x"})


def test_header_contents(encoded):
    m, img, data = encoded
    h = ContainerReader(data).header
    assert h.shape == (1, 96, 130) and h.dtype == "float32" and h.tile_size == 64
    assert h.model["id"] == "test-model" and h.model["hash"] == m.weights_hash()
    assert h.model["arch"] == "residual" and h.model["config"]["base_channels"] == 8
    assert h.bands[0]["radiometry"]["kind"] == "intensity"
    assert h.bands[0]["invalid"] == 16
    assert sum(1 for t in h.tiles if t.mask_length) == 1  # only the tile holding the NaNs has a mask
    assert len(h.tiles) == 6 and h.metadata["note"] == "x"


def test_truncated(encoded):
    _, _, data = encoded
    for n in (0, 5, 20, len(data) // 2, len(data) - 1):
        with pytest.raises(TruncatedFileError):
            sarcodec.decode(data[:n])


def test_wrong_magic(encoded):
    _, _, data = encoded
    with pytest.raises(NotASarcFileError, match="bad magic"):
        sarcodec.decode(b"GIF89a" + data[6:])
    with pytest.raises(NotASarcFileError):
        sarcodec.decode(b"hello world, not a container at all" * 3)


def test_wrong_version(encoded):
    _, _, data = encoded
    bad = bytearray(data)
    bad[8:10] = (99).to_bytes(2, "little")
    with pytest.raises(UnsupportedVersionError, match="version 99"):
        sarcodec.decode(bytes(bad))


def test_footer_dictionary_is_frozen():
    """The preset dictionary is part of format 1.0: changing it would make every file unreadable.
    A new dictionary needs a new major format version."""
    import zlib

    from sarcodec.container import FOOTER_DICT

    assert (len(FOOTER_DICT), zlib.adler32(FOOTER_DICT)) == (2168, 0xE833A765)


def test_only_format_1_0_is_read(encoded):
    """Files are written as format 1.0 (0x0100); any other version (the pre-1.0 development
    versions 1-10 included) is refused as unsupported; a footer deflated with another dictionary
    is refused as corrupted."""
    import zlib

    from sarcodec.container import FORMAT_VERSION, format_name
    from sarcodec.fuzz import rewrite_footer

    m, img, data = encoded
    h = ContainerReader(data).header
    assert h.version == FORMAT_VERSION == 0x0100 and format_name(h.version) == "1.0" and data[8:10] == b"\x00\x01"
    off = int(TRAILER.unpack(data[-TRAILER.size:])[0])
    for v in (1, 4, 10, 0x0101, 0x0200):
        with pytest.raises(UnsupportedVersionError, match="reads format 1.0"):
            ContainerReader(rewrite_footer(data, h.to_json(), v))
    forged = bytearray(data[:off])
    c = zlib.compressobj(9, zdict=b'{"model":')
    foot = c.compress(b'{"model":{}}') + c.flush()
    crc = zlib.crc32(bytes(forged[:HEADER.size]) + foot)
    forged += foot + TRAILER.pack(off, len(foot), crc, b"CRAS")
    with pytest.raises(CorruptedFileError, match="unreadable"):
        ContainerReader(bytes(forged))


def test_every_flipped_byte_is_detected(encoded):
    """A single flipped byte anywhere -- header, tiles, mask, footer, trailer -- raises a FormatError."""
    m, _, data = encoded
    rng = np.random.default_rng(0)
    positions = sorted(set(range(0, HEADER.size)) | set(range(len(data) - TRAILER.size, len(data)))
                       | set(rng.integers(HEADER.size, len(data) - TRAILER.size, 60).tolist()))
    for pos in positions:
        bad = bytearray(data)
        bad[pos] ^= 0x10
        with pytest.raises(FormatError):
            sarcodec.decode(bytes(bad), m)


def test_corrupted_tile_names_the_tile(encoded):
    m, _, data = encoded
    t = ContainerReader(data).header.tiles[2]
    bad = bytearray(data)
    bad[t.offset + t.length // 2] ^= 0xFF
    with pytest.raises(CorruptedFileError, match="tile .*band 0.*checksum"):
        sarcodec.decode(bytes(bad), m)


def test_wrong_model_is_refused(encoded):
    _, _, data = encoded
    m, _, _ = encoded
    other = small_model("residual", name="test-model")
    other.load_state_dict(m.state_dict())
    other.load_tables_state(m.tables_state())
    assert other.weights_hash() == m.weights_hash()
    with torch.no_grad():
        next(other.g_s.parameters()).add_(1e-3)  # same name, same architecture, other weights
    other.weights_changed()
    with pytest.raises(ModelMismatchError, match="hash"):
        sarcodec.decode(data, other)


def test_unknown_model_without_explicit_model(encoded):
    _, _, data = encoded
    with pytest.raises(sarcodec.ModelError, match="test-model"):
        sarcodec.decode(data)


def test_tiled_decode_matches_and_mask_is_exact(encoded):
    m, img, data = encoded
    out = sarcodec.decode(data, m)
    assert np.array_equal(np.isnan(out), np.isnan(img))


def test_multiband_integer_dn_round_trip():
    from sarcodec.data import synthetic_sar

    vv = synthetic_sar((64, 80), seed=1) * 4e5
    vh = vv * 0.2
    dn = np.stack([np.sqrt(vv), np.sqrt(vh)]).round().clip(1, 65534).astype(np.uint16)
    dn[1, :3, :3] = 0
    m = small_model("baseline")
    data = sarcodec.encode(dn, m, kind="dn", nodata=0, band_descriptions=["VV", "VH"])
    h = ContainerReader(data).header
    assert h.bands[0]["radiometry"]["lo_db"] != h.bands[1]["radiometry"]["lo_db"]
    assert h.bands[0]["invalid"] == 0 and h.bands[1]["invalid"] == 9
    assert [b["description"] for b in h.bands] == ["VV", "VH"]
    out = sarcodec.decode(data, m)
    assert out.shape == dn.shape and out.dtype == np.uint16
    assert np.all(out[1, :3, :3] == 0) and np.all(out[dn > 0] > 0)
    db = sarcodec.decode(data, m, kind="db")
    assert db.dtype == np.float32 and np.isnan(db[1, :3, :3]).all()


@pytest.mark.parametrize("bad", [np.zeros((0, 0), np.float32), np.ones((4, 4), np.complex64), "text"])
def test_encode_rejects_bad_input(bad):
    with pytest.raises(sarcodec.InputError):
        sarcodec.encode(bad, small_model("baseline"))


def test_atomic_write(tmp_path):
    p = tmp_path / "a.bin"
    atomic_write(p, b"one")
    with pytest.raises(OutputError, match="exists"):
        atomic_write(p, b"two")
    atomic_write(p, b"two", force=True)
    assert p.read_bytes() == b"two"
    with pytest.raises(OutputError):
        atomic_write(tmp_path / "missing-dir" / "x", b"1")
    # a failure inside the writer leaves neither a partial file nor a temp file
    with pytest.raises(RuntimeError):
        with atomic_write(tmp_path / "b.bin") as fh:
            fh.write(b"partial")
            raise RuntimeError("boom")
    assert sorted(f.name for f in tmp_path.iterdir()) == ["a.bin"]
