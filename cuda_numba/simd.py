"""16-lane float32 pieces of the engine's epilogue, written in LLVM IR.

Why IR: inside the large parallel block kernel, LLVM left the epilogue's
plain Numba loops scalar (it cannot prove that the stream row it stores
does not alias the arrays it reads), and RPReLU's ``z >= 0 ? z : z * slope``
then became a data-dependent branch, mispredicted on about half of the
elements: ~8 ns per element, 10x the convolution's own time at 64 channels.
:func:`epilogue16` loads 16 channels, computes with vector instructions
(``select``, never a data-dependent branch) and stores 16 channels once;
the whole epilogue then costs ~0.3 ns per element, ~20 % of a block.

Every operation is the float32 operation of the float simulation, rounded
the same way (see :mod:`cuda_numba.engine_kernels`): ``fmul``, ``fadd``,
``fsub`` and ``llvm.fma`` (torch's BatchNorm), no fast-math flags.
Per-channel parameters are read at ``[c_off : c_off+16]``. No bounds checks:
callers loop over whole groups of 16 and finish a row with scalar code.
"""
from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

LANES = 16
_F32 = ir.FloatType()
_I64 = ir.IntType(64)
_V = ir.VectorType(_F32, LANES)
_F1 = types.Array(types.float32, 1, "C")
_I32_1 = types.Array(types.int32, 1, "C")
_IDX = types.int64


def _ptr(context, builder, aryty, ary, off, vty=_V):
    data = context.make_array(aryty)(context, builder, ary).data
    return builder.bitcast(builder.gep(data, [off]), vty.as_pointer())


def _load(context, builder, sig, args, i, off):
    return builder.load(_ptr(context, builder, sig.args[i], args[i], off), align=4)


def _fn(builder, name, n):
    return cgutils.get_or_insert_function(builder.module, ir.FunctionType(_V, [_V] * n), name)


def _zero():
    return ir.Constant(_V, [0.0] * LANES)


@intrinsic
def fma32(typingctx, a, b, c):
    """``a * b + c`` with one rounding (``llvm.fma.f32``): torch's BatchNorm arithmetic on the CPU."""
    if not (a == b == c == types.float32):
        return None

    def codegen(context, builder, sig, args):
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_F32, [_F32] * 3), "llvm.fma.f32")
        return builder.call(fn, args)

    return types.float32(types.float32, types.float32, types.float32), codegen


@intrinsic
def fma16(typingctx, src, x, x_off, a, b, c_off):
    """``x = fma(src, a, b)`` at the same offset: eval-mode BatchNorm as torch computes it (``src`` may be ``x``)."""
    if not (src == x == a == b == _F1):
        return None

    def codegen(context, builder, sig, args):
        s_ = _load(context, builder, sig, args, 0, args[2])
        a_, b_ = (_load(context, builder, sig, args, i, args[5]) for i in (3, 4))
        y = builder.call(_fn(builder, "llvm.fma.v16f32", 3), [s_, a_, b_])
        builder.store(y, _ptr(context, builder, sig.args[1], args[1], args[2]), align=4)
        return context.get_dummy_value()

    return types.void(src, x, _IDX, a, b, _IDX), codegen


@intrinsic
def sign_word_fma(typingctx, x, x_off, a, b, c_off):
    """One packed word: bit ``i`` = ``fma(x[x_off+i], a[c_off+i], b[c_off+i]) >= 0`` for i < 64.

    Four 16-lane FMAs and ordered compares (NaN -> bit 0, as torch's ``z >= 0``).
    With ``a = 1`` this is ``x + b >= 0`` exactly (the RSign shift).
    """
    if not (x == a == b == _F1):
        return None

    def codegen(context, builder, sig, args):
        fma = _fn(builder, "llvm.fma.v16f32", 3)
        word = ir.Constant(_I64, 0)
        for q in range(4):
            vals = [_load(context, builder, sig, args, i, builder.add(off, ir.Constant(_I64, 16 * q)))
                    for i, off in ((0, args[1]), (2, args[4]), (3, args[4]))]
            ge = builder.fcmp_ordered(">=", builder.call(fma, vals), _zero())
            quarter = builder.zext(builder.bitcast(ge, ir.IntType(16)), _I64)
            word = builder.or_(word, builder.shl(quarter, ir.Constant(_I64, 16 * q)))
        return word

    return types.uint64(x, _IDX, a, b, _IDX), codegen


def _if(builder, flag, value, then_fn):
    """``then_fn(value)`` when the int64 ``flag`` is non-zero, else ``value`` (a branch and a phi, not a select)."""
    bb_in = builder.basic_block
    with builder.if_then(builder.icmp_signed("!=", flag, ir.Constant(_I64, 0))):
        v_then = then_fn(value)
        bb_then = builder.basic_block
    phi = builder.phi(value.type)
    phi.add_incoming(v_then, bb_then)
    phi.add_incoming(value, bb_in)
    return phi


# rows of the engine's parameter table (cuda_numba.engine_kernels.P_*), repeated to keep this module standalone
_ROWS = dict(alpha=0, lpos=1, lneg=2, bn_a=3, bn_b=4, res_a=5, res_b=6, gamma=7, slope=8, zeta=9, next_a=10,
             next_b=11, pol=12, theta=13)


@intrinsic
def epilogue16(typingctx, S, s_off, word, wsh, P, c, res, x, x_off, mode, has_bn, res_bn, rprelu, bits):
    """The whole epilogue of 16 output channels ``c .. c+15`` of one pixel, in registers; returns their sign bits.

    ``y`` = ``float32(S) * alpha`` (mode 0), the threshold voter's level (mode 3)
    or the packed vote's level (bits ``wsh ..`` of ``word``, modes 1-2); then
    ``BN`` (``fma``), ``+ res`` (or ``+ fma(res, res_a, res_b)``), RPReLU, the
    store to ``x[x_off:]``; returns the 16 bits ``fma(v, next_a, next_b) >= 0``
    (0 unless ``bits``). ``P`` is the ``[14, Co]`` parameter table; the flags
    are loop-invariant, so their branches leave the loop (LLVM unswitches them).
    The same operations as the one-step functions above, with no store and
    reload between the steps.
    """
    p2 = types.Array(types.float32, 2, "C")
    if not (S == _I32_1 and P == p2 and res == x == _F1 and word == types.uint64):
        return None

    def codegen(context, builder, sig, args):
        (S_, s_off_, word_, wsh_, P_, c_, res_, x_, x_off_, mode_, has_bn_, res_bn_, rprelu_, bits_) = args
        pa = context.make_array(sig.args[4])(context, builder, P_)
        co = builder.extract_value(pa.shape, 1)
        base = builder.gep(pa.data, [c_])

        def row(name):
            off = builder.mul(ir.Constant(_I64, _ROWS[name]), co)
            return builder.load(builder.bitcast(builder.gep(base, [off]), _V.as_pointer()), align=4)

        fma = _fn(builder, "llvm.fma.v16f32", 3)
        vi32 = ir.VectorType(ir.IntType(32), LANES)
        vi64 = ir.VectorType(_I64, LANES)
        zero = ir.Constant(_I64, 0)
        # --- the layer output: sums (modes 0, 3) or votes (1, 2); branches on the uniform mode
        is_vote = builder.or_(builder.icmp_signed("==", mode_, ir.Constant(_I64, 1)),
                              builder.icmp_signed("==", mode_, ir.Constant(_I64, 2)))
        bb0 = builder.basic_block
        with builder.if_else(is_vote) as (then, otherwise):
            with then:
                wv = builder.shuffle_vector(
                    builder.insert_element(ir.Constant(vi64, ir.Undefined), builder.lshr(word_, wsh_),
                                           ir.Constant(ir.IntType(32), 0)),
                    ir.Constant(vi64, ir.Undefined), ir.Constant(vi32, [0] * LANES))
                bit = builder.and_(builder.lshr(wv, ir.Constant(vi64, list(range(LANES)))), ir.Constant(vi64, [1] * 16))
                y_vote = builder.select(builder.icmp_unsigned("!=", bit, ir.Constant(vi64, [0] * LANES)),
                                        row("lpos"), row("lneg"))
                bb_v = builder.basic_block
            with otherwise:
                sv = builder.sitofp(builder.load(_ptr(context, builder, sig.args[0], S_, s_off_, vi32), align=4), _V)

                def threshold(y_lin):  # mode 3: sign(round(s) * p - theta) > 0, exact on integers
                    up = builder.fcmp_ordered(">=", builder.fmul(sv, row("pol")), row("theta"))
                    return builder.select(up, row("lpos"), row("lneg"))

                is_thr = builder.zext(builder.icmp_signed("==", mode_, ir.Constant(_I64, 3)), _I64)
                y_sum = _if(builder, is_thr, builder.fmul(sv, row("alpha")), threshold)
                bb_s = builder.basic_block
        y = builder.phi(_V)
        y.add_incoming(y_vote, bb_v)
        y.add_incoming(y_sum, bb_s)
        del bb0
        y = _if(builder, has_bn_, y, lambda v: builder.call(fma, [v, row("bn_a"), row("bn_b")]))
        r = builder.load(_ptr(context, builder, sig.args[6], res_, x_off_), align=4)
        r = _if(builder, res_bn_, r, lambda v: builder.call(fma, [v, row("res_a"), row("res_b")]))
        v = builder.fadd(y, r)

        def act(v):
            z = builder.fsub(v, row("gamma"))
            neg = builder.fmul(z, row("slope"))
            return builder.fadd(builder.select(builder.fcmp_ordered(">=", z, _zero()), z, neg), row("zeta"))

        v = _if(builder, rprelu_, v, act)
        builder.store(v, _ptr(context, builder, sig.args[7], x_, x_off_), align=4)
        mask = _if(builder, bits_, ir.Constant(ir.IntType(16), 0), lambda _: builder.bitcast(
            builder.fcmp_ordered(">=", builder.call(fma, [v, row("next_a"), row("next_b")]), _zero()),
            ir.IntType(16)))
        return builder.zext(mask, _I64)

    return types.uint64(S, _IDX, word, _IDX, P, _IDX, res, x, _IDX, _IDX, _IDX, _IDX, _IDX, _IDX), codegen
