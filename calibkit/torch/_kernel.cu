// TensorRT-style |x| histograms of CUDA tensors, bit-identical to calibkit's CPU kernels.
//
// Every value is widened to double exactly and binned with the CPU kernels' arithmetic:
// scale = num_bins / upper (correctly rounded), y = |x| * scale (one rounded product, never
// fused), bin = (long long) y (truncation). Growth doubles the range in double (exact) and
// merges runs of 2**k bins. See calibkit/histogram.py, _kernels.py and _reference.py for the
// semantics, and calibkit/torch/cuda.py for the launches.
//
// One tensor is binned by one launch of hist_pass, at the moment its forward hook fires: a
// later in-place op (ReLU(inplace=True), `out += x`) may overwrite it, so nothing is deferred.
// Each block bins the values inside the current range into the histogram's scratch row and
// counts the rest; the last block to finish (a ticket) commits: reject (NaN under 'raise'),
// take or grow the range, fold, add, and publish by bumping the row's epoch. A block that saw
// values the range did not hold (every finite value on the first batch) waits for the epoch and
// bins them at the new range; the others return at once. The wait needs every block of the
// grid resident (a waiting block must not keep another from starting): `fused` launches are
// cooperative launches. With `fused` off, hist_above does that second sweep as a separate
// launch instead (every block of it returns at once when nothing is left).
//
// Each histogram is one row of int64 (see cuda.py's _Row): counts[nbins], scratch[nbins], then
// the META fields below. Scratch, the partial statistics and the ticket are zero between
// launches: the committing block clears them.

typedef unsigned long long u64;
typedef long long i64;

#define DT_F32 0
#define DT_F16 1
#define DT_BF16 2
#define DT_F64 3

// META fields after counts and scratch (keep in step with cuda.py)
#define M_UPPER 0     // double: the range (0: none yet)
#define M_MAX 1       // double: max |x| of finite values
#define M_INF 2       // i64
#define M_NAN 3       // i64 (counted, under 'skip')
#define M_REJECTED 4  // i64: NaN of batches left out under 'raise'
#define M_SMAX 5      // u64 bits of this launch's max (|x| >= 0: the bits order as the values)
#define M_SNAN 6
#define M_SINF 7
#define M_SDEF 8      // values at or above the range (every finite one without a range)
#define M_SYNC 9      // two u32: the ticket, the epoch (commits so far)
#define M_MODE 10     // double: 0 nothing left, 1 bin every finite value, 2 those >= M_PREV
#define M_PREV 11     // double: the range before this launch

__device__ __forceinline__ double f16_to_double(unsigned short h) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return (double)f;  // float16 values are float32 normals or zero: never flushed
}

// |float32| from its bits, exactly: the hardware widening flushed float32 subnormals to zero on
// an H100 (CuPy/NVRTC build), and the CPU kernels count them
__device__ __forceinline__ double f32bits_to_abs(unsigned u) {
    u &= 0x7fffffffu;
    if (u < 0x00800000u) return (double)u * 0x1p-149;  // zero or subnormal: exact (u < 2**23)
    return (double)__uint_as_float(u);
}

template <int DT>
__device__ __forceinline__ double load_one(const char* p, i64 i) {
    if (DT == DT_F32) return f32bits_to_abs(((const unsigned*)p)[i]);
    if (DT == DT_F16) return fabs(f16_to_double(((const unsigned short*)p)[i]));
    if (DT == DT_BF16) return f32bits_to_abs(((unsigned)((const unsigned short*)p)[i]) << 16);
    return fabs(((const double*)p)[i]);
}

template <int DT>
struct Width {
    static constexpr int per = (DT == DT_F32) ? 4 : (DT == DT_F64 ? 2 : 8);
};

// Hand |x| of every element of a 16-byte vector to op.
template <int DT, typename Op>
__device__ __forceinline__ void apply_vec(uint4 v, Op& op) {
    if (DT == DT_F32) {
        op(f32bits_to_abs(v.x));
        op(f32bits_to_abs(v.y));
        op(f32bits_to_abs(v.z));
        op(f32bits_to_abs(v.w));
    } else if (DT == DT_F64) {
        op(fabs(__hiloint2double((int)v.y, (int)v.x)));
        op(fabs(__hiloint2double((int)v.w, (int)v.z)));
    } else {
        unsigned w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
        for (int k = 0; k < 4; ++k) {
            if (DT == DT_F16) {
                op(fabs(f16_to_double((unsigned short)(w[k] & 0xffffu))));
                op(fabs(f16_to_double((unsigned short)(w[k] >> 16))));
            } else {
                op(f32bits_to_abs(w[k] << 16));
                op(f32bits_to_abs(w[k] & 0xffff0000u));
            }
        }
    }
}

// Visit this block's share of one tensor: 16-byte loads, four in flight per thread, a
// grid-stride over the tensor, the tail (n % per) by block 0.
template <int DT, typename Op>
__device__ void sweep(const char* p, i64 n, Op& op) {
    const int per = Width<DT>::per;
    const i64 nvec = n / per;
    const uint4* pv = (const uint4*)p;
    const i64 stride = (i64)gridDim.x * blockDim.x;
    i64 v = (i64)blockIdx.x * blockDim.x + threadIdx.x;
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
    if (blockIdx.x == 0)
        for (i64 i = nvec * per + threadIdx.x; i < n; i += blockDim.x) op(load_one<DT>(p, i));
}

template <typename Op>
__device__ void sweep_any(const char* p, i64 n, int dt, Op& op) {
    switch (dt) {  // uniform in the launch
        case DT_F32: sweep<DT_F32>(p, n, op); break;
        case DT_F16: sweep<DT_F16>(p, n, op); break;
        case DT_BF16: sweep<DT_BF16>(p, n, op); break;
        default: sweep<DT_F64>(p, n, op); break;
    }
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

__device__ __forceinline__ double as_double(i64 bits) { return __longlong_as_double(bits); }
__device__ __forceinline__ i64 as_bits(double v) { return __double_as_longlong(v); }

#define INF_BITS 0x7ff0000000000000LL

struct WithinOp {
    unsigned* sh;
    double scale;
    double nb;
    bool first;  // no range yet: only the max and the non-finite counts (as the CPU's scan)
    unsigned zeros;
    double m;
    u64 nan, inf, deferred;
    __device__ __forceinline__ void operator()(double a) {
        if (first) {
            if (a != a) {
                ++nan;
            } else if (a == as_double(INF_BITS)) {
                ++inf;
            } else {
                ++deferred;
                if (a > m) m = a;
            }
            return;
        }
        double y = __dmul_rn(a, scale);  // never contracted into anything else
        if (y < nb) {
            bump(sh, zeros, (long long)y);
            if (a > m) m = a;
        } else if (a != a) {
            ++nan;
        } else if (a == as_double(INF_BITS)) {
            ++inf;
        } else {
            ++deferred;
            if (a > m) m = a;
        }
    }
};

struct AboveOp {
    unsigned* sh;
    double scale, pscale, nb;
    long long last;
    bool all;
    unsigned zeros;
    __device__ __forceinline__ void operator()(double a) {
        if (!(a <= 1.7976931348623157e308)) return;  // NaN and inf are counted, not binned
        if (!all && __dmul_rn(a, pscale) < nb) return;  // binned by the first sweep
        long long i = (long long)__dmul_rn(a, scale);
        bump(sh, zeros, i < last ? i : last);
    }
};

// The committing block: this launch's partial results (in scratch and the S fields, written
// with atomics by every block) into the histogram; then clear them for the next launch.
__device__ void commit(i64* row, i64 n, int nbins, int log2_bins, int raise_nan, u64* tmp) {
    u64* c = (u64*)row;
    u64* scratch = c + nbins;
    i64* meta = row + 2 * nbins;
    const double m = as_double((i64)__ldcg((const u64*)meta + M_SMAX));
    const u64 nan = __ldcg((const u64*)meta + M_SNAN);
    const u64 inf = __ldcg((const u64*)meta + M_SINF);
    const u64 def = __ldcg((const u64*)meta + M_SDEF);
    const double prev = as_double(meta[M_UPPER]);
    double mode = 0.0;
    if (nan && raise_nan) {  // the batch is rejected for this tensor; the host raises
        if (threadIdx.x == 0) meta[M_REJECTED] += (i64)nan;
    } else {
        if (threadIdx.x == 0) {
            meta[M_NAN] += (i64)nan;
            meta[M_INF] += (i64)inf;
            if (m > as_double(meta[M_MAX])) meta[M_MAX] = as_bits(m);
        }
        if (!(prev > 0.0)) {
            if (m == 0.0) {  // only zeros so far: bin 0 whatever the range becomes
                if (threadIdx.x == 0) c[0] += (u64)(n - (i64)nan - (i64)inf);
            } else {
                mode = 1.0;
                if (threadIdx.x == 0) meta[M_UPPER] = as_bits(m);
            }
        } else {
            for (int i = threadIdx.x; i < nbins; i += blockDim.x) c[i] += __ldcg(scratch + i);
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
                mode = 2.0;
                if (threadIdx.x == 0) meta[M_UPPER] = as_bits(up);
            } else if (def && threadIdx.x == 0) {
                c[nbins - 1] += def;  // the range's top value: the last bin, as TensorRT does
            }
        }
    }
    for (int i = threadIdx.x; i < nbins; i += blockDim.x) scratch[i] = 0ull;
    if (threadIdx.x == 0) {
        meta[M_SMAX] = meta[M_SNAN] = meta[M_SINF] = meta[M_SDEF] = 0;
        ((unsigned*)(meta + M_SYNC))[0] = 0u;  // the ticket
        meta[M_MODE] = as_bits(mode);
        meta[M_PREV] = as_bits(prev);
    }
}

__device__ void above(const char* x, i64 n, int dt, i64* row, int nbins, unsigned* sh) {
    const i64* meta = row + 2 * nbins;
    // written in this kernel by another block when fused: read past L1
    const double mode = as_double((i64)__ldcg((const u64*)meta + M_MODE));
    if (mode == 0.0) return;
    AboveOp op;
    op.sh = sh;
    op.nb = (double)nbins;
    op.scale = __ddiv_rn((double)nbins, as_double((i64)__ldcg((const u64*)meta + M_UPPER)));
    op.all = mode == 1.0;
    op.pscale = op.all ? 0.0
                       : __ddiv_rn((double)nbins,
                                   as_double((i64)__ldcg((const u64*)meta + M_PREV)));
    op.last = nbins - 1;
    op.zeros = 0u;
    zero_shared(sh, nbins);
    sweep_any(x, n, dt, op);
    flush_shared(sh, op.zeros, nbins, (u64*)row);
}

// Bin x (n elements of dtype dt) into the histogram `row`. Dynamic shared memory: 8 * nbins.
// fused (a cooperative launch): the blocks with values above the range bin them after the
// commit.
extern "C" __global__ void __launch_bounds__(512, 2)
hist_pass(const char* x, i64 n, int dt, i64* row, int nbins, int log2_bins, int raise_nan,
          int fused) {
    extern __shared__ u64 shared_u64[];
    unsigned* sh = (unsigned*)shared_u64;
    i64* meta = row + 2 * nbins;
    unsigned* ticket = (unsigned*)(meta + M_SYNC);
    volatile unsigned* epoch = ticket + 1;
    const double up = as_double(meta[M_UPPER]);
    WithinOp op;
    op.sh = sh;
    op.first = !(up > 0.0);
    op.scale = op.first ? 0.0 : __ddiv_rn((double)nbins, up);
    op.nb = (double)nbins;
    op.zeros = 0u;
    op.m = 0.0;
    op.nan = op.inf = op.deferred = 0ull;
    zero_shared(sh, nbins);
    sweep_any(x, n, dt, op);
    flush_shared(sh, op.zeros, nbins, (u64*)row + nbins);
    const double m = warp_max(op.m);
    const u64 nan = warp_sum(op.nan), inf = warp_sum(op.inf), def = warp_sum(op.deferred);
    if ((threadIdx.x & 31) == 0) {
        u64* s = (u64*)meta;
        if (m > 0.0) atomicMax(s + M_SMAX, (u64)as_bits(m));
        if (nan) atomicAdd(s + M_SNAN, nan);
        if (inf) atomicAdd(s + M_SINF, inf);
        if (def) atomicAdd(s + M_SDEF, def);
    }
    // the last block to take a ticket commits: every block's atomics are visible to it
    __shared__ bool last;
    __shared__ unsigned seen;
    __threadfence();
    const bool later = __syncthreads_or(op.deferred != 0ull) && fused;
    if (threadIdx.x == 0) {
        seen = *epoch;  // before the ticket: the commit this block waits for comes after it
        __threadfence();
        last = atomicAdd(ticket, 1u) == gridDim.x - 1;
    }
    __syncthreads();
    if (last) {
        __threadfence();
        commit(row, n, nbins, log2_bins, raise_nan, shared_u64);
        __threadfence();
        __syncthreads();
        if (threadIdx.x == 0) atomicAdd((unsigned*)epoch, 1u);
    } else if (later) {
        if (threadIdx.x == 0) {
            while (*epoch == seen) __nanosleep(256);
            __threadfence();
        }
        __syncthreads();
    }
    if (later) above(x, n, dt, row, nbins, sh);
}

// The values hist_pass left for the new range (a separate launch: hist_pass was not fused).
extern "C" __global__ void __launch_bounds__(512, 2)
hist_above(const char* x, i64 n, int dt, i64* row, int nbins) {
    extern __shared__ u64 shared_u64[];
    above(x, n, dt, row, nbins, (unsigned*)shared_u64);
}
