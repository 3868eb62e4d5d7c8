"""Hash contract v1, checked against the xxhash library called directly."""

from __future__ import annotations

import json
import struct
import unicodedata
from pathlib import Path

import numpy as np
import pytest
import xxhash
from hypothesis import given, settings
from hypothesis import strategies as st

import safeserve as ss
from safeserve._hashing import key_bytes

from .strategies import bytes_keys, int_keys, keys, salts, str_keys

VECTORS = json.loads((Path(__file__).parent / "vectors" / "hash_v1.json").read_text("utf-8"))


def reference_bucket(raw: bytes, salt: str) -> int:
    """The contract, spelled out with xxhash alone."""
    return xxhash.xxh3_64_intdigest(raw, xxhash.xxh3_64_intdigest(salt.encode("utf-8"))) % 10_000


def decode(case: dict[str, object]) -> ss._hashing.Key:
    if case["kind"] == "bytes":
        return bytes.fromhex(str(case["key"]))
    return case["key"]  # type: ignore[return-value]


@pytest.mark.parametrize("case", VECTORS["cases"], ids=lambda c: f"{c['salt']!r}-{c['name']}")
def test_shipped_vectors(case: dict[str, object]) -> None:
    """Every shipped vector: our scalar and vectorized forms equal the frozen bucket."""
    key = decode(case)
    assert ss.salt_seed(str(case["salt"])) == case["seed"]
    assert ss.bucket_of(key, salt=str(case["salt"])) == case["bucket"]
    assert ss.buckets_of([key], salt=str(case["salt"])).tolist() == [case["bucket"]]
    if case["kind"] == "int":
        arr = np.array([key], dtype=np.int64)
        assert ss.buckets_of(arr, salt=str(case["salt"])).tolist() == [case["bucket"]]


@pytest.mark.parametrize("case", VECTORS["cases"], ids=lambda c: f"{c['salt']!r}-{c['name']}")
def test_vectors_match_xxhash(case: dict[str, object]) -> None:
    """The frozen vectors are what the xxhash library computes for the contract's bytes."""
    key = decode(case)
    if case["kind"] == "int":
        raw = struct.pack("<q", key)
    elif case["kind"] == "str":
        raw = str(key).encode("utf-8")
    else:
        raw = key  # type: ignore[assignment]
    assert reference_bucket(raw, str(case["salt"])) == case["bucket"]


def test_nfc_and_nfd_are_different_keys() -> None:
    """Strings are hashed as given: no Unicode normalization."""
    nfc = unicodedata.normalize("NFC", "café")
    nfd = unicodedata.normalize("NFD", "café")
    assert nfc != nfd
    assert ss.bucket_of(nfc, salt="s") == reference_bucket(nfc.encode(), "s")
    assert ss.bucket_of(nfd, salt="s") == reference_bucket(nfd.encode(), "s")


@given(key=str_keys, salt=salts)
def test_str_keys_match_xxhash(key: str, salt: str) -> None:
    """Any str key is hashed as its UTF-8 bytes."""
    assert ss.bucket_of(key, salt=salt) == reference_bucket(key.encode("utf-8"), salt)


@given(key=bytes_keys, salt=salts)
def test_bytes_keys_match_xxhash(key: bytes, salt: str) -> None:
    """Any bytes key is hashed as is."""
    assert ss.bucket_of(key, salt=salt) == reference_bucket(key, salt)


@given(key=int_keys, salt=salts)
def test_int_keys_match_xxhash(key: int, salt: str) -> None:
    """Any signed 64-bit int is hashed as 8 little-endian bytes."""
    assert ss.bucket_of(key, salt=salt) == reference_bucket(struct.pack("<q", key), salt)


@settings(max_examples=200, deadline=None)
@given(
    ks=st.lists(int_keys, max_size=300),
    salt=salts,
    dtype=st.sampled_from(["int64", "int32", "int16", "uint32", "uint8"]),
)
def test_vectorized_ints_agree_bit_for_bit(ks: list[int], salt: str, dtype: str) -> None:
    """The numpy port of xxh3 equals the scalar form for every integer dtype."""
    info = np.iinfo(dtype)
    ks = [k for k in ks if info.min <= k <= info.max]
    arr = np.array(ks, dtype=dtype)
    expected = [reference_bucket(struct.pack("<q", k), salt) for k in ks]
    assert ss.buckets_of(arr, salt=salt).tolist() == expected


@settings(max_examples=100, deadline=None)
@given(ks=st.lists(keys, max_size=100), salt=salts)
def test_vectorized_sequences_agree_bit_for_bit(ks: list[object], salt: str) -> None:
    """Mixed sequences of str, bytes and int equal the scalar form, in order."""
    got = ss.buckets_of(ks, salt=salt).tolist()  # type: ignore[arg-type]
    assert got == [ss.bucket_of(k, salt=salt) for k in ks]  # type: ignore[arg-type]


def test_vectorized_str_array_and_uint64_edge() -> None:
    """numpy str arrays work; uint64 keys up to 2**63-1 agree, above it they are rejected."""
    words = np.array(["a", "bb", "用户"])
    assert ss.buckets_of(words, salt="s").tolist() == [
        reference_bucket(w.encode(), "s") for w in ["a", "bb", "用户"]
    ]
    ok = np.array([0, 2**63 - 1], dtype=np.uint64)
    assert ss.buckets_of(ok, salt="s").tolist() == [
        reference_bucket(struct.pack("<q", int(k)), "s") for k in ok
    ]
    with pytest.raises(ss.InvalidKeyError, match=str(2**63)):
        ss.buckets_of(np.array([1, 2**63], dtype=np.uint64), salt="s")


@pytest.mark.parametrize("bad", [2**63, -(2**63) - 1, 10**30])
def test_out_of_range_ints_rejected(bad: int) -> None:
    """Ints outside the signed 64-bit range raise InvalidKeyError naming the value."""
    with pytest.raises(ss.InvalidKeyError, match=str(bad)):
        ss.bucket_of(bad, salt="s")
    with pytest.raises(ss.InvalidKeyError, match=str(bad)):
        ss.buckets_of([1, bad], salt="s")


@pytest.mark.parametrize("bad", [1.5, None, True, ("a",), ["a"], {"a": 1}, object()])
def test_unsupported_key_types_rejected(bad: object) -> None:
    """Floats, None, bools, containers and objects raise InvalidKeyError naming the type."""
    with pytest.raises(ss.InvalidKeyError, match=type(bad).__name__):
        ss.bucket_of(bad, salt="s")  # type: ignore[arg-type]
    with pytest.raises(ss.InvalidKeyError):
        ss.buckets_of(["ok", bad], salt="s")  # type: ignore[list-item]


@pytest.mark.parametrize(
    "arr", [np.array([0.5, 1.5]), np.array([True, False]), np.zeros((2, 2), dtype=int)]
)
def test_unsupported_arrays_rejected(arr: np.ndarray) -> None:
    """Float, bool and 2-D key arrays are rejected."""
    with pytest.raises(ss.InvalidKeyError):
        ss.buckets_of(arr, salt="s")


def test_int_subclasses_and_numpy_scalars_hash_like_ints() -> None:
    """numpy integer scalars hash as the int they hold; bool is not an int key."""
    assert ss.bucket_of(np.int32(-5), salt="s") == ss.bucket_of(-5, salt="s")
    assert key_bytes(np.uint8(7)) == struct.pack("<q", 7)
    with pytest.raises(ss.InvalidKeyError):
        key_bytes(np.True_)  # type: ignore[arg-type]


def test_salt_must_be_str() -> None:
    """A non-str salt is rejected rather than converted."""
    with pytest.raises(ss.InvalidKeyError):
        ss.salt_seed(b"salt")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        ss.bucket_of("k")


def test_vectorized_ints_across_hash_blocks_match_xxhash() -> None:
    """Int arrays longer than one hashing block (and ragged at its end) equal xxhash."""
    from safeserve._hashing import _HASH_BLOCK

    rng = np.random.default_rng(12)
    n = 2 * _HASH_BLOCK + 123
    ks = rng.integers(-(2**63), 2**63 - 1, size=n, dtype=np.int64, endpoint=True)
    ks[:4] = [0, -1, 2**63 - 1, -(2**63)]
    got = ss.buckets_of(ks, salt="blocks")
    assert got.dtype == np.int64
    assert got.shape == (n,)
    picks = np.concatenate([np.arange(8), rng.integers(0, n, 500), np.arange(n - 8, n)])
    for i in picks.tolist():
        assert got[i] == reference_bucket(struct.pack("<q", int(ks[i])), "blocks"), i


@settings(max_examples=100, deadline=None)
@given(
    head=st.lists(str_keys, max_size=20),
    odd=st.one_of(bytes_keys, int_keys),
    tail=st.lists(str_keys, max_size=20),
    salt=salts,
)
def test_str_sequence_with_other_keys_falls_back_exactly(
    head: list[str], odd: object, tail: list[str], salt: str
) -> None:
    """A bytes or int key among str keys takes the general path: same buckets as xxhash."""
    ks = [*head, odd, *tail]

    def raw(k: object) -> bytes:
        if isinstance(k, str):
            return k.encode("utf-8")
        return k if isinstance(k, bytes) else struct.pack("<q", k)

    expected = [reference_bucket(raw(k), salt) for k in ks]
    assert ss.buckets_of(ks, salt=salt).tolist() == expected


def test_str_subclass_keys_hash_as_their_text() -> None:
    """A str subclass (a str enum) is hashed as its UTF-8 text, in the fast path too."""

    class Name(str):
        pass

    ks = [Name("user-1"), "user-2", Name("用户")]
    assert ss.buckets_of(ks, salt="s").tolist() == [
        reference_bucket(str(k).encode("utf-8"), "s") for k in ks
    ]
