"""Hash contract, version 1: which bucket a routing key falls in.

The contract (it must never change silently, because changing it moves users between
variants in the middle of a rollout):

- a key is a ``str`` (encoded as UTF-8, no normalization), ``bytes``, or an ``int`` in the
  signed 64-bit range (encoded as 8 bytes, little-endian, two's complement);
- ``seed = xxh3_64(salt.encode("utf-8"))`` with xxh3's seed 0;
- ``bucket = xxh3_64(key_bytes, seed=seed) % 10_000``.

The scalar form (:func:`bucket_of`) and the vectorized forms (:func:`buckets_of`) agree bit for
bit. Integer arrays are hashed in numpy with a port of xxh3's 4-to-8-byte path (every int key
is exactly 8 bytes long), so a million int keys take a few milliseconds; sequences of str or
bytes go through the xxhash C function once per key.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from typing import Final

import numpy as np
import xxhash
from numpy.typing import NDArray

from ._errors import InvalidKeyError

__all__ = [
    "BUCKETS",
    "HASH_VERSION",
    "Key",
    "bucket_of",
    "buckets_of",
    "key_bytes",
    "salt_seed",
]

#: The number of buckets of hash contract version 1.
BUCKETS: Final = 10_000
#: The hash contract implemented here.
HASH_VERSION: Final = 1

Key = str | bytes | int

_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1

_xxh3 = xxhash.xxh3_64_intdigest

# xxh3's default secret, bytes 8..15 and 16..23 read as little-endian u64 (XXH3_kSecret in
# xxhash.h). The 4-to-8-byte path mixes the input with (secret[8:16] ^ secret[16:24]) - seed.
_SECRET_8: Final = 0x1CAD21F72C81017C
_SECRET_16: Final = 0xDB979083E96DD4DE
_PRIME_MX2: Final = np.uint64(0x9FB21C651E98DF25)
_M64: Final = (1 << 64) - 1


def salt_seed(salt: str) -> int:
    """Return the xxh3 seed derived from a rollout salt: ``xxh3_64(salt as UTF-8)``.

    Args:
        salt: The rollout's salt (by default its name).

    Returns:
        The unsigned 64-bit seed.

    >>> salt_seed("checkout-model")
    3139607093915397350
    """
    if not isinstance(salt, str):
        raise InvalidKeyError(f"salt must be a str, got {type(salt).__name__} ({salt!r})")
    return _xxh3(salt.encode("utf-8"))


def _utf8(key: str) -> bytes:
    """A str key's UTF-8 bytes (of its value, for a subclass)."""
    try:
        return str.encode(key, "utf-8")
    except UnicodeEncodeError:
        raise InvalidKeyError(
            f"str key {key!r} cannot be encoded as UTF-8 (a lone surrogate)"
        ) from None


def key_bytes(key: Key) -> bytes:
    """Encode a routing key the way hash contract v1 hashes it.

    Args:
        key: A ``str``, ``bytes`` or signed 64-bit ``int``.

    Returns:
        The bytes that are hashed.

    Raises:
        InvalidKeyError: for another type (``bool`` included) or an int out of range.

    >>> key_bytes(1)
    b'\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x00'
    >>> key_bytes("é")
    b'\\xc3\\xa9'
    """
    kind = type(key)
    if kind is str:
        return _utf8(key)  # type: ignore[arg-type]
    if kind is bytes:
        return key  # type: ignore[return-value]
    if kind is int:
        if _INT64_MIN <= key <= _INT64_MAX:  # type: ignore[operator]
            return key.to_bytes(8, "little", signed=True)  # type: ignore[union-attr]
        raise InvalidKeyError(f"int key {key!r} is outside the signed 64-bit range")
    # Subclasses (a str enum, numpy ints) are accepted through their base value; bool is not,
    # because True == 1 would silently collide with the int key 1.
    if isinstance(key, bool):
        raise InvalidKeyError(f"unsupported key type bool ({key!r}): use str, bytes or int")
    if isinstance(key, str):
        return _utf8(key)  # a str subclass: its value, as a str
    if isinstance(key, bytes | bytearray | memoryview):
        return bytes(key)
    if isinstance(key, int | np.integer):
        return key_bytes(int(key))
    raise InvalidKeyError(
        f"unsupported key type {type(key).__name__} ({key!r}): use str, bytes or int"
    )


def bucket_of(key: Key, *, salt: str | None = None, seed: int | None = None) -> int:
    """Return the bucket in ``[0, 10_000)`` of one key (hash contract v1).

    Give either the rollout's ``salt`` or the ``seed`` derived from it by :func:`salt_seed`
    (the router precomputes the seed once).

    Args:
        key: A ``str``, ``bytes`` or signed 64-bit ``int``.
        salt: The rollout's salt.
        seed: The precomputed seed, instead of ``salt``.

    Raises:
        InvalidKeyError: for an unsupported key.

    >>> bucket_of("user-42", salt="checkout-model")
    8968
    >>> bucket_of(42, salt="checkout-model")
    2376
    """
    if seed is None:
        if salt is None:
            raise TypeError("bucket_of() needs salt= or seed=")
        seed = salt_seed(salt)
    return int(_xxh3(key_bytes(key), seed) % BUCKETS)


#: Keys hashed per pass: the scratch arrays stay in cache and are reused in place.
_HASH_BLOCK: Final = 1 << 15


def _bitflip(seed: int) -> np.uint64:
    """XXH3_len_4to8_64b's ``(secret[8:16] ^ secret[16:24]) - seed'`` for a 64-bit seed."""
    # seed' = seed ^ (swap32(low32(seed)) << 32)
    low = seed & 0xFFFFFFFF
    swapped = int.from_bytes(low.to_bytes(4, "little"), "big")
    seed2 = (seed ^ (swapped << 32)) & _M64
    return np.uint64(((_SECRET_8 ^ _SECRET_16) - seed2) & _M64)


def _int_buckets(keys: NDArray[np.integer], seed: int) -> NDArray[np.int64]:
    too_big = keys.dtype == np.uint64 and keys.size and int(keys.max()) > _INT64_MAX
    if too_big:
        bad = int(keys[keys > _INT64_MAX][0])
        raise InvalidKeyError(f"int key {bad!r} is outside the signed 64-bit range")
    k = keys.astype(np.int64, copy=False).view(np.uint64)
    n = k.size
    out = np.empty(n, dtype=np.int64)
    res = out.view(np.uint64)
    bitflip = _bitflip(seed)
    size = min(n, _HASH_BLOCK)
    h = np.empty(size, dtype=np.uint64)
    t = np.empty(size, dtype=np.uint64)
    u = np.empty(size, dtype=np.uint64)
    # Block by block, in place: no temporary array per step (each would cost a pass over
    # fresh memory).
    for start in range(0, n, _HASH_BLOCK):
        kb = k[start : start + _HASH_BLOCK]
        m = kb.size
        hh, tt, uu = h[:m], t[:m], u[:m]
        # The key's 8 little-endian bytes: input1 = bytes 0..3 (low word), input2 = bytes
        # 4..7. xxh3 builds input64 = input2 + (input1 << 32), the two halves swapped.
        np.left_shift(kb, 32, out=hh)
        np.right_shift(kb, 32, out=tt)
        hh |= tt
        hh ^= bitflip
        # XXH3_rrmxmx(h, len=8): h ^= rotl(h, 49) ^ rotl(h, 24) (each rotation's two halves
        # have no bit in common, so | is ^), then two multiply-xorshift rounds.
        np.left_shift(hh, 49, out=tt)
        np.right_shift(hh, 15, out=uu)
        tt ^= uu
        np.left_shift(hh, 24, out=uu)
        tt ^= uu
        np.right_shift(hh, 40, out=uu)
        tt ^= uu
        hh ^= tt
        hh *= _PRIME_MX2
        np.right_shift(hh, 35, out=tt)
        tt += 8
        hh ^= tt
        hh *= _PRIME_MX2
        np.right_shift(hh, 28, out=tt)
        hh ^= tt
        # h % BUCKETS as h - (h // BUCKETS) * BUCKETS: numpy divides by a constant quickly.
        np.floor_divide(hh, BUCKETS, out=tt)
        tt *= BUCKETS
        np.subtract(hh, tt, out=res[start : start + m])
    return out


def buckets_of(
    keys: NDArray[np.integer] | Sequence[Key] | Iterable[Key],
    *,
    salt: str | None = None,
    seed: int | None = None,
) -> NDArray[np.int64]:
    """Return the buckets of many keys at once, equal bit for bit to :func:`bucket_of`.

    A numpy integer array is hashed fully vectorized. A numpy array of ``str`` or ``bytes``, or
    any sequence of keys, is hashed key by key in C.

    Args:
        keys: A 1-D numpy integer array, or a sequence of ``str``/``bytes``/``int`` keys.
        salt: The rollout's salt.
        seed: The precomputed seed, instead of ``salt``.

    Returns:
        An ``int64`` array of buckets, one per key, in input order.

    Raises:
        InvalidKeyError: for an unsupported key, naming the first bad one.

    >>> import numpy as np
    >>> buckets_of(np.array([42, -1]), salt="checkout-model").tolist()
    [2376, 133]
    >>> buckets_of(["user-42", b"user-42"], salt="checkout-model").tolist()
    [8968, 8968]
    """
    if seed is None:
        if salt is None:
            raise TypeError("buckets_of() needs salt= or seed=")
        seed = salt_seed(salt)
    if isinstance(keys, np.ndarray):
        if keys.ndim != 1:
            raise InvalidKeyError(f"keys must be a 1-D array, got shape {keys.shape!r}")
        kind = keys.dtype.kind
        if kind in "iu":
            return _int_buckets(keys, seed)
        if kind == "b":
            raise InvalidKeyError("unsupported key dtype bool: use str, bytes or int")
        if kind not in "USO":
            raise InvalidKeyError(
                f"unsupported key dtype {keys.dtype!s}: use integers, str or bytes"
            )
        keys = keys.tolist()
    if not isinstance(keys, list | tuple):
        keys = list(keys)
    n = len(keys)
    try:
        # All-str input (the common case) skips the per-key type dispatch of key_bytes:
        # str.encode raises TypeError at the first key that is not a str (subclasses are
        # encoded as key_bytes encodes them).
        hashes = np.fromiter(
            map(_xxh3, map(str.encode, keys), itertools.repeat(seed)), dtype=np.uint64, count=n
        )
    except (TypeError, UnicodeEncodeError):  # key_bytes names the key it cannot take
        hashes = np.fromiter(
            map(_xxh3, map(key_bytes, keys), itertools.repeat(seed)), dtype=np.uint64, count=n
        )
    out = hashes.view(np.int64)
    np.remainder(hashes, BUCKETS, out=hashes)  # in place: the result is the int64 view
    return out
