// TensorRT-style |x| histograms of CUDA tensors, bit-identical to calibkit's CPU kernels.
//
// Every value is widened to double exactly (float16 and bfloat16 through float32) and binned
// with the CPU kernels' arithmetic: scale = num_bins / upper (correctly rounded), y = |x| * scale
// (one rounded product, never fused), bin = (long long) y (truncation). Growth doubles the range
// in double (exact) and merges runs of 2**k bins. See calibkit/histogram.py, _kernels.py and
// _reference.py for the semantics, and calibkit/torch/cuda.py for the launch sequence:
//   within : bin each tensor at its current range into scratch; max, NaN, inf, deferred counts
//   commit : per tensor: reject (NaN under 'raise'), take the range, add, grow and fold
//   above  : bin the values the range did not hold (first batch: all of them) at the new range
// A work table of 5 int64 per tensor: data pointer, elements, dtype code, slot, first block.

typedef unsigned long long u64;
typedef long long i64;

#define DT_F32 0
#define DT_F16 1
#define DT_BF16 2
#define DT_F64 3

__device__ __forceinline__ double f16_to_double(unsigned short h) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return (double)f;
}

// float32 bits -> double, exactly, built from the fields: the hardware conversion flushed
// float32 subnormals to zero on an H100 (CuPy/NVRTC build), which the CPU kernels count
__device__ __forceinline__ double f32bits_to_double(unsigned u) {
    const unsigned e = (u >> 23) & 0xffu, f = u & 0x7fffffu;
    const u64 sign = (u64)(u >> 31) << 63;
    if (e == 0) {  // zero or subnormal: f * 2**-149, exact in double (f < 2**23)
        const double v = (double)f * 0x1p-149;
        return sign ? -v : v;
    }
    const u64 exp = (e == 0xffu) ? 0x7ffull : (u64)(e - 127u + 1023u);  // inf/NaN keep theirs
    return __longlong_as_double((long long)(sign | (exp << 52) | ((u64)f << 29)));
}

__device__ __forceinline__ double bf16_to_double(unsigned short h) {
    return f32bits_to_double(((unsigned)h) << 16);
}

template <int DT>
__device__ __forceinline__ double load_one(const char* p, i64 i) {
    if (DT == DT_F32) return f32bits_to_double(((const unsigned*)p)[i]);
    if (DT == DT_F16) return f16_to_double(((const unsigned short*)p)[i]);
    if (DT == DT_BF16) return bf16_to_double(((const unsigned short*)p)[i]);
    return ((const double*)p)[i];
}

template <int DT>
struct Width {
    static constexpr int per = (DT == DT_F32) ? 4 : (DT == DT_F64 ? 2 : 8);
};

template <int DT, typename Op>
__device__ __forceinline__ void apply_vec(uint4 v, Op& op) {
    if (DT == DT_F32) {
        op(f32bits_to_double(v.x));
        op(f32bits_to_double(v.y));
        op(f32bits_to_double(v.z));
        op(f32bits_to_double(v.w));
    } else if (DT == DT_F64) {
        op(__hiloint2double((int)v.y, (int)v.x));
        op(__hiloint2double((int)v.w, (int)v.z));
    } else {
        unsigned w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
        for (int k = 0; k < 4; ++k) {
            unsigned short lo = (unsigned short)(w[k] & 0xffffu);
            unsigned short hi = (unsigned short)(w[k] >> 16);
            if (DT == DT_F16) {
                op(f16_to_double(lo));
                op(f16_to_double(hi));
            } else {
                op(bf16_to_double(lo));
                op(bf16_to_double(hi));
            }
        }
    }
}

// Visit the elements of block `bi` of `nblk` blocks over one tensor: 16-byte loads, four in
// flight per thread, a grid-stride over the tensor, the tail (n % per) by block 0.
template <int DT, typename Op>
__device__ void sweep(const char* p, i64 n, i64 bi, i64 nblk, Op& op) {
    const int per = Width<DT>::per;
    const i64 nvec = n / per;
    const uint4* pv = (const uint4*)p;
    const i64 stride = nblk * (i64)blockDim.x;
    i64 v = bi * (i64)blockDim.x + threadIdx.x;
    for (; v + 3 * stride < nvec; v += 4 * stride) {
        uint4 a0 = __ldg(pv + v);
        uint4 a1 = __ldg(pv + v + stride);
        uint4 a2 = __ldg(pv + v + 2 * stride);
        uint4 a3 = __ldg(pv + v + 3 * stride);
        apply_vec<DT>(a0, op);
        apply_vec<DT>(a1, op);
        apply_vec<DT>(a2, op);
        apply_vec<DT>(a3, op);
    }
    for (; v < nvec; v += stride) apply_vec<DT>(__ldg(pv + v), op);
    if (bi == 0)
        for (i64 i = nvec * per + threadIdx.x; i < n; i += blockDim.x) op(load_one<DT>(p, i));
}

template <typename Op>
__device__ void sweep_any(const char* p, i64 n, int dt, i64 bi, i64 nblk, Op& op) {
    switch (dt) {  // uniform in the block: one tensor per block
        case DT_F32: sweep<DT_F32>(p, n, bi, nblk, op); break;
        case DT_F16: sweep<DT_F16>(p, n, bi, nblk, op); break;
        case DT_BF16: sweep<DT_BF16>(p, n, bi, nblk, op); break;
        default: sweep<DT_F64>(p, n, bi, nblk, op); break;
    }
}

// The tensor of this block: the last g with first_block[g] <= blockIdx.x.
__device__ __forceinline__ int find_tensor(const i64* table, int G) {
    int lo = 0, hi = G - 1;
    const i64 b = blockIdx.x;
    while (lo < hi) {
        int mid = (lo + hi + 1) / 2;
        if (table[mid * 5 + 4] <= b) lo = mid; else hi = mid - 1;
    }
    return lo;
}

__device__ __forceinline__ i64 blocks_of(const i64* table, int G, int g) {
    i64 end = (g + 1 < G) ? table[(g + 1) * 5 + 4] : (i64)gridDim.x;
    return end - table[g * 5 + 4];
}

// Bin 0 is counted in a register (ReLU zeros and tiny values would serialise on one
// shared-memory address), the rest with shared-memory atomics.
__device__ __forceinline__ void bump(unsigned* sh, unsigned& zeros, long long i) {
    if (i == 0) ++zeros; else atomicAdd(sh + i, 1u);
}

__device__ void zero_shared(unsigned* sh, int nbins) {
    for (int i = threadIdx.x; i < nbins; i += blockDim.x) sh[i] = 0u;
    __syncthreads();
}

__device__ void flush_shared(unsigned* sh, unsigned zeros, int nbins, u64* out) {
    if (zeros) atomicAdd(sh, zeros);
    __syncthreads();
    for (int i = threadIdx.x; i < nbins; i += blockDim.x) {
        unsigned c = sh[i];
        if (c) atomicAdd(out + i, (u64)c);
    }
}

__device__ __forceinline__ u64 warp_sum(u64 v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ double warp_max(double v) {
    for (int o = 16; o > 0; o >>= 1) v = fmax(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

struct WithinOp {
    unsigned* sh;
    double scale;
    double nb;
    bool first;  // no range yet: only the max and the non-finite counts (as the CPU's scan)
    unsigned zeros;
    double m;
    u64 nan, inf, deferred;
    __device__ __forceinline__ void operator()(double x) {
        double a = fabs(x);
        if (first) {
            if (a != a) ++nan;
            else if (a == __longlong_as_double(0x7ff0000000000000LL)) ++inf;
            else if (a > m) m = a;
            return;
        }
        double y = __dmul_rn(a, scale);  // never contracted into anything else
        if (y < nb) {
            bump(sh, zeros, (long long)y);
            if (a > m) m = a;
        } else if (a != a) {
            ++nan;
        } else if (a == __longlong_as_double(0x7ff0000000000000LL)) {
            ++inf;
        } else {
            ++deferred;
            if (a > m) m = a;
        }
    }
};

extern "C" __global__ void hist_within(const i64* table, int G, int nbins, const double* upper,
                                       u64* scratch, u64* stats) {
    extern __shared__ unsigned sh[];
    const int g = find_tensor(table, G);
    const i64* w = table + g * 5;
    const double up = upper[w[3]];
    WithinOp op;
    op.sh = sh;
    op.first = !(up > 0.0);
    op.scale = op.first ? 0.0 : __ddiv_rn((double)nbins, up);
    op.nb = (double)nbins;
    op.zeros = 0u;
    op.m = 0.0;
    op.nan = op.inf = op.deferred = 0ull;
    zero_shared(sh, nbins);
    sweep_any((const char*)w[0], w[1], (int)w[2], blockIdx.x - w[4], blocks_of(table, G, g), op);
    flush_shared(sh, op.zeros, nbins, scratch + (i64)g * nbins);
    double m = warp_max(op.m);
    u64 nan = warp_sum(op.nan), inf = warp_sum(op.inf), def = warp_sum(op.deferred);
    if ((threadIdx.x & 31) == 0) {
        u64* s = stats + (i64)g * 4;
        if (m > 0.0) atomicMax(s, (u64)__double_as_longlong(m));  // m >= 0: bits are monotone
        if (nan) atomicAdd(s + 1, nan);
        if (inf) atomicAdd(s + 2, inf);
        if (def) atomicAdd(s + 3, def);
    }
}

// One block per tensor. action[g] = (mode, previous upper): 0 nothing to do, 1 bin every finite
// value at the new range (first batch), 2 bin the values at or above the previous range.
extern "C" __global__ void hist_commit(const i64* table, int nbins, int log2_bins, int raise_nan,
                                       u64* counts, double* upper, double* max_abs,
                                       i64* num_inf, i64* num_nan, i64* rejected,
                                       const u64* scratch, const u64* stats, double* action) {
    extern __shared__ u64 tmp[];
    const int g = blockIdx.x;
    const i64* w = table + g * 5;
    const i64 slot = w[3], n = w[1];
    const u64* s = stats + (i64)g * 4;
    const double m = __longlong_as_double((i64)s[0]);
    const u64 nan = s[1], inf = s[2], def = s[3];
    const double prev = upper[slot];
    u64* c = counts + slot * nbins;
    const u64* add = scratch + (i64)g * nbins;
    int mode = 0;
    if (nan && raise_nan) {  // the batch is rejected for this tensor; the host raises
        if (threadIdx.x == 0) {
            rejected[slot] += (i64)nan;
            action[2 * g] = 0.0;
        }
        return;
    }
    if (threadIdx.x == 0) {
        num_nan[slot] += (i64)nan;
        num_inf[slot] += (i64)inf;
        if (m > max_abs[slot]) max_abs[slot] = m;
    }
    if (!(prev > 0.0)) {
        if (m == 0.0) {  // only zeros so far: bin 0 whatever the range becomes
            if (threadIdx.x == 0) c[0] += (u64)(n - (i64)nan - (i64)inf);
        } else {
            mode = 1;
            if (threadIdx.x == 0) upper[slot] = m;
        }
    } else {
        for (int i = threadIdx.x; i < nbins; i += blockDim.x) c[i] += add[i];
        if (m > prev) {
            double up = prev;
            int k = 0;
            while (up < m) {
                up *= 2.0;  // exact
                ++k;
            }
            const int f = k >= log2_bins ? nbins : (1 << k);
            __syncthreads();
            for (int j = threadIdx.x; j < nbins; j += blockDim.x) {
                u64 sum = 0;
                if (j < nbins / f)
                    for (int t = 0; t < f; ++t) sum += c[(i64)j * f + t];
                tmp[j] = sum;
            }
            __syncthreads();
            for (int j = threadIdx.x; j < nbins; j += blockDim.x) c[j] = tmp[j];
            mode = 2;
            if (threadIdx.x == 0) upper[slot] = up;
        } else if (def && threadIdx.x == 0) {
            c[nbins - 1] += def;  // the range's top value: the last bin, as TensorRT does
        }
    }
    if (threadIdx.x == 0) {
        action[2 * g] = (double)mode;
        action[2 * g + 1] = prev;
    }
}

struct AboveOp {
    unsigned* sh;
    double scale, pscale, nb;
    long long last;
    bool all;
    unsigned zeros;
    __device__ __forceinline__ void operator()(double x) {
        double a = fabs(x);
        if (!(a <= 1.7976931348623157e308)) return;  // NaN and inf are counted, not binned
        if (!all && __dmul_rn(a, pscale) < nb) return;  // binned by hist_within
        long long i = (long long)__dmul_rn(a, scale);
        bump(sh, zeros, i < last ? i : last);
    }
};

extern "C" __global__ void hist_above(const i64* table, int G, int nbins, const double* upper,
                                      const double* action, u64* counts) {
    extern __shared__ unsigned sh[];
    const int g = find_tensor(table, G);
    const double mode = action[2 * g];
    if (mode == 0.0) return;
    const i64* w = table + g * 5;
    AboveOp op;
    op.sh = sh;
    op.nb = (double)nbins;
    op.scale = __ddiv_rn((double)nbins, upper[w[3]]);
    op.all = mode == 1.0;
    op.pscale = op.all ? 0.0 : __ddiv_rn((double)nbins, action[2 * g + 1]);
    op.last = nbins - 1;
    op.zeros = 0u;
    zero_shared(sh, nbins);
    sweep_any((const char*)w[0], w[1], (int)w[2], blockIdx.x - w[4], blocks_of(table, G, g), op);
    flush_shared(sh, op.zeros, nbins, counts + w[3] * nbins);
}
