"""Bit-level building blocks shared by the CPU kernels: popcount, the XOR-popcount
micro-kernel, bit-field copies, and the hierarchical vote on a mask of votes.

Numba has no CPU popcount. ``numba.extending.intrinsic`` functions emit
LLVM's ``ctpop`` directly:

* :func:`popc` - ``llvm.ctpop.i64`` on one unsigned word (one ``popcnt``).
* :func:`xor_popcount_tile` and its fused variants ``_s`` (store the dot
  products), ``_mv`` (return the votes as bits), ``_hmv`` (one vote mask per
  block) - the register-blocked micro-kernel of the convolution, written in
  LLVM IR so that its accumulators stay in vector registers: for ``TILE_P``
  rows of packed activations and ``TILE_V`` output channels it computes
  ``C[p, l] = sum_k popcount(A[p, k] XOR W[k, l])``. Each step of ``k`` loads
  ``TILE_V`` weight words as vectors, broadcasts one activation word per row,
  and does XOR, ``llvm.ctpop.v8i64`` (AVX-512 VPOPCNTQ where the CPU has it)
  and an add per vector: three 512-bit operations per 512 binary MACs, close
  to this CPU's two-port limit (~0.9 T binary MAC/s per core measured). A
  plain Numba loop over output channels keeps its accumulators in memory and
  ran ~3x slower here, which is why this one piece is IR.
* :func:`sign_word_f32` - 64 float32 -> one packed word by vector compares.

Everything counts *disagreements* ``popcount(a XOR w)``; with ``N`` valid
terms the dot product is ``s = N - 2 * disagreements`` (the same as
``2 * popcount(XNOR) - N``). Counting XOR lets bits that are 0 in both
operands (channel padding inside a word, padded taps, stream padding) drop
out with no mask.

:func:`tree_vote_py` (the hierarchical vote of one output, votes as bits of
a word) is plain integer Python, compiled by ``numba.cuda.jit(device=True)``
in :mod:`cuda_numba.cuda_kernels`; the CPU kernels use its bit-sliced form
:func:`tree_vote_masks` (64 outputs at once);
the tests check both against :func:`mvlib.voters.hierarchical_vote`.
"""
from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from mvlib.voter_spec import TIE_RULES, normalize_fanins

TILE_P = 4   # activation rows (output pixels) per micro-kernel call
TILE_NV = 2  # vectors of 8 words per row: TILE_V output channels
LANES = 8    # uint64 lanes per vector: one 512-bit register
TILE_V = TILE_NV * LANES  # 16 output channels per micro-kernel call
assert TILE_P * TILE_V == 64  # the fused MV epilogue returns one tile's votes as one uint64

# The kernels' tie codes: a rule's position in mvlib's TIE_RULES, so 0 = +1, 1 = -1, 2 = the first child's vote
# (the branches of tree_vote_py and tree_vote_masks). TIE_RULES only ever grows at its end.
TIE_CODES = {rule: code for code, rule in enumerate(TIE_RULES)}

_I64_IR = ir.IntType(64)
_VEC = ir.VectorType(_I64_IR, LANES)


@intrinsic
def popc(typingctx, x):
    """Number of set bits of an unsigned integer (``llvm.ctpop``), same type as ``x``."""
    if not isinstance(x, types.Integer) or x.signed:
        return None  # unsigned only: same rule as the CUDA kernels

    def codegen(context, builder, sig, args):
        return builder.ctpop(args[0])

    return x(x), codegen


def _data_ptr(context, builder, aryty, ary):
    return context.make_array(aryty)(context, builder, ary).data


def _tile_loop(context, builder, sig, args, seg_end=None):
    """Emit the reduction loop of the micro-kernel; return the TILE_P x TILE_NV accumulator vectors.

    Rows are read in ``nseg`` segments of ``slen`` words: word ``j`` of segment
    ``q`` of row ``p`` is ``A[roff[p] + q*sstride + j]`` and meets weight step
    ``k = q*slen + j``. One segment (``sstride`` unused) reads an im2col row;
    ``kh`` segments with ``sstride`` = one padded image row read the taps of a
    pixel straight from a spatially padded packed input (no im2col copy).
    With ``seg_end``, the accumulators of each segment are handed to
    ``seg_end(builder, q, accs)`` and reset: one segment per HMV block.
    """
    a_ary, roff, nseg, sstride, slen, w_ary, w_off = args[:7]
    pa = _data_ptr(context, builder, sig.args[0], a_ary)
    proff = _data_ptr(context, builder, sig.args[1], roff)
    pw = _data_ptr(context, builder, sig.args[5], w_ary)
    ctpop = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(_VEC, [_VEC]), f"llvm.ctpop.v{LANES}i64")
    zero_mask = ir.Constant(ir.VectorType(ir.IntType(32), LANES), [0] * LANES)
    zero = ir.Constant(_VEC, None)
    # accumulators as entry-block allocas: mem2reg turns them into vector registers
    acc = [[cgutils.alloca_once_value(builder, zero) for _ in range(TILE_NV)] for _ in range(TILE_P)]
    rows = [builder.gep(pa, [builder.load(builder.gep(proff, [ir.Constant(_I64_IR, p)]))]) for p in range(TILE_P)]
    wbase = builder.gep(pw, [w_off])
    with cgutils.for_range(builder, nseg) as seg_loop:
        q = seg_loop.index
        seg_rows = [builder.gep(r, [builder.mul(q, sstride)]) for r in rows]
        wseg = builder.gep(wbase, [builder.mul(builder.mul(q, slen), ir.Constant(_I64_IR, TILE_V))])
        def step(j):  # one k: TILE_NV weight vectors against TILE_P broadcast activation words
            wk = builder.gep(wseg, [builder.mul(j, ir.Constant(_I64_IR, TILE_V))])
            wv = [builder.load(_vec_at(builder, wk, ir.Constant(_I64_IR, v * LANES), _VEC), align=8)
                  for v in range(TILE_NV)]
            for p in range(TILE_P):
                a = builder.load(builder.gep(seg_rows[p], [j]))
                av = builder.shuffle_vector(
                    builder.insert_element(ir.Constant(_VEC, ir.Undefined), a, ir.Constant(ir.IntType(32), 0)),
                    ir.Constant(_VEC, ir.Undefined), zero_mask)
                for v in range(TILE_NV):
                    cnt = builder.call(ctpop, [builder.xor(av, wv[v])])
                    builder.store(builder.add(builder.load(acc[p][v]), cnt), acc[p][v])

        # two k per iteration: halves the loop's counter and branch ops, which compete with the
        # vector ops for the two ports that run 512-bit instructions (short rows: K = 9..72 words)
        one = ir.Constant(_I64_IR, 1)
        with cgutils.for_range(builder, builder.ashr(slen, one)) as loop:
            j0 = builder.shl(loop.index, one)
            step(j0)
            step(builder.add(j0, one))
        with builder.if_then(builder.icmp_signed("!=", builder.and_(slen, one), ir.Constant(_I64_IR, 0))):
            step(builder.sub(slen, one))
        if seg_end is not None:
            seg_end(builder, q, [[builder.load(acc[p][v]) for v in range(TILE_NV)] for p in range(TILE_P)])
            for p in range(TILE_P):
                for v in range(TILE_NV):
                    builder.store(zero, acc[p][v])
    return [[builder.load(acc[p][v]) for v in range(TILE_NV)] for p in range(TILE_P)]


def _mv_bits(builder, accs, th_rows, shift=None):
    """uint64 with bit ``p*TILE_V + l`` = ``2*count <= threshold`` (vector compare, mask to bits)."""
    result = ir.Constant(_I64_IR, 0)
    two = ir.Constant(_VEC, [1] * LANES)
    for p in range(TILE_P):
        row = th_rows[p] if shift is None else builder.gep(th_rows[p], [shift])
        for v in range(TILE_NV):
            th = builder.load(_vec_at(builder, row, ir.Constant(_I64_IR, v * LANES), _VEC), align=8)
            le = builder.icmp_signed("<=", builder.shl(accs[p][v], two), th)
            byte = builder.zext(builder.bitcast(le, ir.IntType(LANES)), _I64_IR)
            result = builder.or_(result, builder.shl(byte, ir.Constant(_I64_IR, p * TILE_V + v * LANES)))
    return result


def _vec_at(builder, base_ptr, index, vty):
    return builder.bitcast(builder.gep(base_ptr, [index]), vty.as_pointer())


_U64_1D = types.Array(types.uint64, 1, "C")
_I64_1D = types.Array(types.int64, 1, "C")
_I32_1D = types.Array(types.int32, 1, "C")
_I16_1D = types.Array(types.int16, 1, "C")
_I64 = types.int64
_HEAD_OK = lambda A, roff, W: A == W == _U64_1D and roff == _I64_1D  # noqa: E731


def _head(A, roff, W):
    """Argument types of the common head ``(A, roff, nseg, sstride, slen, W, w_off)``."""
    return (A, roff, _I64, _I64, _I64, W, _I64)


@intrinsic
def xor_popcount_tile(typingctx, A, roff, nseg, sstride, slen, W, w_off, C, c_off):
    """Raw counts: ``C[c_off + p*TILE_V + l] = sum_k popcount(row_p[k] ^ W[w_off + k*TILE_V + l])``.

    ``A``, ``W``, ``C``: 1-D C-contiguous uint64 arrays, ``roff`` int64 (see
    :func:`_tile_loop` for the row addressing); ``p < TILE_P``, ``l < TILE_V``.
    No bounds checks: the caller sizes the buffers.
    """
    if not (_HEAD_OK(A, roff, W) and C == _U64_1D):
        return None
    sig = types.void(*_head(A, roff, W), C, _I64)

    def codegen(context, builder, sig, args):
        accs = _tile_loop(context, builder, sig, args)
        base = builder.gep(_data_ptr(context, builder, sig.args[7], args[7]), [args[8]])
        for p in range(TILE_P):
            for v in range(TILE_NV):
                builder.store(accs[p][v], _vec_at(builder, base, ir.Constant(_I64_IR, p * TILE_V + v * LANES), _VEC),
                              align=8)
        return context.get_dummy_value()

    return sig, codegen


def _threshold_rows(context, builder, sig, args, i_base, i_toff):
    """Pointers to the TILE_P threshold rows ``base[toff[p] : toff[p] + TILE_V]``."""
    pbase = _data_ptr(context, builder, sig.args[i_base], args[i_base])
    ptoff = _data_ptr(context, builder, sig.args[i_toff], args[i_toff])
    return [builder.gep(pbase, [builder.load(builder.gep(ptoff, [ir.Constant(_I64_IR, p)]))])
            for p in range(TILE_P)]


@intrinsic
def xor_popcount_tile_s(typingctx, A, roff, nseg, sstride, slen, W, w_off, base, toff, out, out_off, ld):
    """Fused popcount epilogue: ``out[out_off + p*ld + l] = base[toff[p] + l] - 2*count`` (int16 or int32 ``out``).

    ``base`` (int64) holds ``N + 2*corr`` per border pattern and output
    channel (see :mod:`cuda_numba.cpu_kernels`), ``toff`` (int64, TILE_P
    entries) each pixel's row in it; the stored value is the dot product ``s``.
    """
    if not (_HEAD_OK(A, roff, W) and base == toff == _I64_1D and out in (_I32_1D, _I16_1D)):
        return None
    sig = types.void(*_head(A, roff, W), base, toff, out, _I64, _I64)
    out_bits = out.dtype.bitwidth

    def codegen(context, builder, sig, args):
        accs = _tile_loop(context, builder, sig, args)
        th_rows = _threshold_rows(context, builder, sig, args, 7, 8)
        pout = builder.gep(_data_ptr(context, builder, sig.args[9], args[9]), [args[10]])
        vout = ir.VectorType(ir.IntType(out_bits), LANES)
        for p in range(TILE_P):
            row = builder.gep(pout, [builder.mul(args[11], ir.Constant(_I64_IR, p))])
            for v in range(TILE_NV):
                th = builder.load(_vec_at(builder, th_rows[p], ir.Constant(_I64_IR, v * LANES), _VEC), align=8)
                s = builder.sub(th, builder.shl(accs[p][v], ir.Constant(_VEC, [1] * LANES)))
                builder.store(builder.trunc(s, vout), _vec_at(builder, row, ir.Constant(_I64_IR, v * LANES), vout),
                              align=out_bits // 8)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def xor_popcount_tile_mv(typingctx, A, roff, nseg, sstride, slen, W, w_off, base, toff):
    """Fused MV epilogue: a uint64 whose bit ``p*TILE_V + l`` is ``2*count <= base[toff[p] + l]``.

    That is ``s >= 0`` (ties vote +1) for pixel ``p`` and output channel ``l``.
    """
    if not (_HEAD_OK(A, roff, W) and base == toff == _I64_1D):
        return None
    sig = types.uint64(*_head(A, roff, W), base, toff)

    def codegen(context, builder, sig, args):
        accs = _tile_loop(context, builder, sig, args)
        return _mv_bits(builder, accs, _threshold_rows(context, builder, sig, args, 7, 8))

    return sig, codegen


@intrinsic
def xor_popcount_tile_hmv(typingctx, A, roff, nseg, sstride, slen, W, w_off, base, toff, bstride, V):
    """Inner votes of ``nseg`` HMV blocks in one call: ``V[g]`` = the MV bits of block ``g``.

    Block ``g`` is segment ``g`` (its stream of ``slen`` words at
    ``roff[p] + g*sstride``); its thresholds are ``base[toff[p] + g*bstride + l]``.
    Bits as in :func:`xor_popcount_tile_mv`.
    """
    if not (_HEAD_OK(A, roff, W) and base == toff == _I64_1D and V == _U64_1D):
        return None
    sig = types.void(*_head(A, roff, W), base, toff, _I64, V)

    def codegen(context, builder, sig, args):
        th_rows = _threshold_rows(context, builder, sig, args, 7, 8)
        pv = _data_ptr(context, builder, sig.args[10], args[10])

        def seg_end(b, q, accs):
            bits = _mv_bits(b, accs, th_rows, shift=b.mul(q, args[9]))
            b.store(bits, b.gep(pv, [q]))

        _tile_loop(context, builder, sig, args, seg_end)
        return context.get_dummy_value()

    return sig, codegen


_F32x16 = ir.VectorType(ir.FloatType(), 16)


@intrinsic
def sign_word_f32(typingctx, x, x_off, shift, s_off):
    """One packed word from 64 contiguous float32: bit ``i`` = ``x[x_off+i] + shift[s_off+i] >= 0``.

    Four 16-lane ``fadd`` + ordered ``fcmp oge`` (NaN -> 0, i.e. -1, as torch's
    ``z >= 0``) whose ``<16 x i1>`` masks are the word's four 16-bit quarters:
    the channels-last packer's inner loop, which a Numba loop leaves scalar.
    """
    f32_1d = types.Array(types.float32, 1, "C")
    if not (x == shift == f32_1d):
        return None
    sig = types.uint64(x, _I64, shift, _I64)

    def codegen(context, builder, sig, args):
        px = builder.gep(_data_ptr(context, builder, sig.args[0], args[0]), [args[1]])
        ps = builder.gep(_data_ptr(context, builder, sig.args[2], args[2]), [args[3]])
        word = ir.Constant(_I64_IR, 0)
        for q in range(4):
            off = ir.Constant(_I64_IR, 16 * q)
            xv = builder.load(_vec_at(builder, px, off, _F32x16), align=4)
            sv = builder.load(_vec_at(builder, ps, off, _F32x16), align=4)
            ge = builder.fcmp_ordered(">=", builder.fadd(xv, sv), ir.Constant(_F32x16, [0.0] * 16))
            quarter = builder.zext(builder.bitcast(ge, ir.IntType(16)), _I64_IR)
            word = builder.or_(word, builder.shl(quarter, ir.Constant(_I64_IR, 16 * q)))
        return word

    return sig, codegen


@intrinsic
def sign_bits16_f32(typingctx, x, x_off, sh):
    """16 sign bits from 16 contiguous float32 and one shift: bit ``i`` = ``x[x_off+i] + sh >= 0`` (uint64).

    One 16-lane ``fadd`` + ordered ``fcmp oge`` (NaN -> 0, as torch's
    ``z >= 0``): a channel plane of the NCHW packer, 16 pixels at a time.
    """
    f32_1d = types.Array(types.float32, 1, "C")
    if not (x == f32_1d and isinstance(sh, types.Float)):
        return None
    sig = types.uint64(x, _I64, types.float32)

    def codegen(context, builder, sig, args):
        px = builder.gep(_data_ptr(context, builder, sig.args[0], args[0]), [args[1]])
        xv = builder.load(builder.bitcast(px, _F32x16.as_pointer()), align=4)
        shv = builder.shuffle_vector(
            builder.insert_element(ir.Constant(_F32x16, ir.Undefined), args[2], ir.Constant(ir.IntType(32), 0)),
            ir.Constant(_F32x16, ir.Undefined), ir.Constant(ir.VectorType(ir.IntType(32), 16), [0] * 16))
        ge = builder.fcmp_ordered(">=", builder.fadd(xv, shv), ir.Constant(_F32x16, [0.0] * 16))
        return builder.zext(builder.bitcast(ge, ir.IntType(16)), _I64_IR)

    return sig, codegen


@njit(inline="always", cache=True)
def transpose64(m):
    """In place: the 64x64 bit matrix ``m`` (bit ``c`` of word ``r`` = entry (r, c)) becomes its transpose.

    Six rounds of block swaps (32, 16, ..., 1 bits), each exchanging the
    upper-right and lower-left blocks of every 2j x 2j diagonal block: 6 x 32
    word pairs instead of 4096 single-bit moves.
    """
    j = 32
    mask = np.uint64(0x00000000FFFFFFFF)
    while j != 0:
        sj = np.uint64(j)
        k = 0
        while k < 64:
            for r in range(k, k + j):
                t = ((m[r] >> sj) ^ m[r + j]) & mask
                m[r] ^= t << sj
                m[r + j] ^= t
            k += 2 * j
        j >>= 1
        if j:
            mask ^= mask << np.uint64(j)
    return m


# --------------------------------------------------------------------------
# Bit fields inside rows of words (LSB-first: bit i of a row is bit i % 64 of word i // 64)
# --------------------------------------------------------------------------
@njit(inline="always", cache=True)
def get_bits(row, base, bit_off, n):
    """Bits ``[bit_off, bit_off + n)`` of the word row starting at ``row[base]``, n in 1..64."""
    q = base + (bit_off >> 6)
    r = np.uint64(bit_off & 63)
    v = row[q] >> r
    if r != 0 and (bit_off & 63) + n > 64:
        v |= row[q + 1] << (np.uint64(64) - r)
    if n < 64:
        v &= (np.uint64(1) << np.uint64(n)) - np.uint64(1)
    return v


@njit(inline="always", cache=True)
def or_bits(row, base, bit_off, v, n):
    """OR the ``n`` low bits ``v`` into the word row at ``row[base]`` from bit ``bit_off``."""
    q = base + (bit_off >> 6)
    r = np.uint64(bit_off & 63)
    row[q] |= v << r
    if r != 0 and (bit_off & 63) + n > 64:
        row[q + 1] |= v >> (np.uint64(64) - r)


# --------------------------------------------------------------------------
# Hierarchical vote on a mask of votes (shared source for CPU and GPU)
# --------------------------------------------------------------------------
def tree_vote_py(votes, nblocks, fanins, tie):
    """Hierarchical MV of ``nblocks`` inner votes held as bits of ``votes`` (uint64).

    Bit ``m`` of ``votes`` is 1 iff block ``m`` (channel order) voted +1
    (its own tie already went to +1). ``fanins`` (int64 array) runs from the
    outer level inwards, as in :func:`mvlib.voters.hierarchical_vote`; levels
    are evaluated innermost first, each over ``g`` consecutive children, with
    ``tie`` 0 = +1, 1 = -1, 2 = the first child's vote. Returns 1 for +1.
    """
    n = nblocks
    one = np.uint64(1)
    for lev in range(fanins.shape[0] - 1, -1, -1):
        g = fanins[lev]
        ng = n // g
        new = np.uint64(0)
        for q in range(ng):
            cnt = 0
            for i in range(g):
                cnt += np.int64((votes >> np.uint64(q * g + i)) & one)
            if 2 * cnt > g:
                bit = one
            elif 2 * cnt < g:
                bit = np.uint64(0)
            elif tie == 0:
                bit = one
            elif tie == 1:
                bit = np.uint64(0)
            else:
                bit = (votes >> np.uint64(q * g)) & one
            new |= bit << np.uint64(q)
        votes = new
        n = ng
    return votes & one


@njit(inline="always", cache=True)
def tree_vote_masks(V, n, fanins, tie, planes):
    """Bit-sliced hierarchical MV over 64 outputs at once (CPU tiles).

    ``V[m]`` (uint64) holds block ``m``'s inner votes for 64 outputs (bit j =
    output j votes +1); ``V`` is overwritten. Each level counts its ``g``
    children per bit position with a ripple-carry counter kept in bit planes
    (``planes``, >= 7 words), compares the count with ``g/2`` bitwise, and
    applies the tie rule to the positions where the count is exactly ``g/2``.
    Same result as :func:`tree_vote_py` applied to every bit position.
    """
    ones = ~np.uint64(0)
    for lev in range(fanins.shape[0] - 1, -1, -1):
        g = fanins[lev]
        ng = n // g
        half = g // 2
        nb = 0
        while (1 << nb) <= g:
            nb += 1
        for q in range(ng):
            for k in range(nb):
                planes[k] = 0
            for i in range(g):
                carry = V[q * g + i]
                for k in range(nb):
                    t = planes[k] & carry
                    planes[k] ^= carry
                    carry = t
            gt = np.uint64(0)
            eq = ones
            for k in range(nb - 1, -1, -1):
                if (half >> k) & 1:
                    eq &= planes[k]
                else:
                    gt |= eq & planes[k]
                    eq &= ~planes[k]
            if g % 2 == 0:
                if tie == 0:
                    gt |= eq
                elif tie == 2:
                    gt |= eq & V[q * g]
            V[q] = gt  # in place: group q's children (q*g...) were read already
        n = ng
    return V[0]


# Inner blocks of a hierarchical vote that the kernels take: their votes are the bits of one uint64.
MAX_VOTE_BLOCKS = 64


def vote_plan(fanins, tie: str):
    """(fan-ins as an int64 array, number of inner blocks, tie code) for the kernels."""
    fs = normalize_fanins(fanins)  # the library's validation of fan-ins
    if tie not in TIE_CODES:
        raise ValueError(f"unknown tie rule {tie!r}; choose one of {TIE_RULES}")
    nblocks = int(np.prod(fs))
    if nblocks > MAX_VOTE_BLOCKS:
        raise ValueError(f"at most {MAX_VOTE_BLOCKS} inner blocks are supported (votes live in one uint64), "
                         f"got {nblocks}")
    return np.asarray(fs, dtype=np.int64), nblocks, TIE_CODES[tie]
