/*
 * Stand-in for libcufft.so.11 (CUDA 12 cuFFT), so that the ASTRA Toolbox 2.5.0 wheel
 * (astra/libastra.so.0 NEEDS libcufft.so.11) loads on a machine that only has CUDA 13.
 *
 * libastra uses cuFFT only for the FBP/FDK ramp filter. Its forward and back projectors
 * (FP3D/BP3D, the only operations benchmarks/projector_peers.py times) never call these.
 * Every entry point here fails with a cuFFT error code, so an FBP/FDK run fails cleanly
 * ("CUFFT error 16" in ASTRA's log) instead of crashing or computing something wrong.
 *
 * The five symbols are the ones libastra.so.0 imports, all versioned @libcufft.so.11;
 * libcufft.map gives them that version node. Build with build.sh (never commit the .so).
 *
 * Signatures follow cufft.h (CUDA 12): cufftHandle is an int, cufftType an int enum,
 * cudaStream_t an opaque pointer, cufftResult an int enum.
 */

#include <stddef.h>

typedef int cufftResult;
typedef int cufftHandle;
typedef int cufftType;
typedef float cufftReal;
typedef struct { float x, y; } cufftComplex;
typedef void *cudaStream_t;

enum {
    CUFFT_SUCCESS = 0,
    CUFFT_INVALID_PLAN = 1,
    CUFFT_NOT_SUPPORTED = 16
};

/* Marker: benchmarks/projector_peers.py looks this symbol up to tell the stub from a real cuFFT. */
const char *jaxmedrf_cufft_stub(void)
{
    return "jaxmedrf cuFFT stub for libcufft.so.11: every call fails with CUFFT_NOT_SUPPORTED";
}

cufftResult cufftPlan1d(cufftHandle *plan, int nx, cufftType type, int batch)
{
    (void)nx;
    (void)type;
    (void)batch;
    if (plan != NULL)
        *plan = 0; /* a defined (invalid) handle, in case the caller destroys it */
    return CUFFT_NOT_SUPPORTED;
}

cufftResult cufftExecR2C(cufftHandle plan, cufftReal *idata, cufftComplex *odata)
{
    (void)plan;
    (void)idata;
    (void)odata;
    return CUFFT_NOT_SUPPORTED;
}

cufftResult cufftExecC2R(cufftHandle plan, cufftComplex *idata, cufftReal *odata)
{
    (void)plan;
    (void)idata;
    (void)odata;
    return CUFFT_NOT_SUPPORTED;
}

cufftResult cufftSetStream(cufftHandle plan, cudaStream_t stream)
{
    (void)plan;
    (void)stream;
    return CUFFT_NOT_SUPPORTED;
}

cufftResult cufftDestroy(cufftHandle plan)
{
    (void)plan;
    return CUFFT_INVALID_PLAN; /* no plan was ever created */
}
