/*
 * device_open.c — device tables by name (device.h): what dstrain's --device picks.
 */
#include "device.h"

#include "internal.h"

#include <string.h>

#ifdef DSCKPT_HAVE_CUDA
#include "device_cuda.h"
#endif

dsckpt_status rt_device_open_named(const char *name, int local_rank, rt_device **out) {
    if (!name || !out) return ds_err(DSCKPT_EINVAL, "rt_device_open_named: NULL argument");
    *out = NULL;
    if (!strcmp(name, "cpu")) {
        *out = (rt_device *)rt_device_cpu(); /* never written: close_named leaves it alone */
        return DSCKPT_OK;
    }
    if (!strcmp(name, "cpu-strict")) return rt_device_cpu_strict_open(out);
    if (!strcmp(name, "cuda")) {
#ifdef DSCKPT_HAVE_CUDA
        return rt_device_cuda_open_local(local_rank, out);
#else
        DS_UNUSED(local_rank);
        return ds_err(DSCKPT_EUNSUPPORTED, "--device cuda: this build has no CUDA (configure with -DDSCKPT_CUDA=ON "
                      "where nvcc is found)");
#endif
    }
    return ds_err(DSCKPT_EINVAL, "unknown device '%s' (cpu, cpu-strict or cuda)", name);
}

void rt_device_close_named(rt_device *dev) {
    if (!dev || dev == rt_device_cpu()) return;
    if (!strcmp(dev->name, "cpu-strict")) {
        rt_device_cpu_strict_close(dev);
        return;
    }
#ifdef DSCKPT_HAVE_CUDA
    if (!strcmp(dev->name, "cuda")) rt_device_cuda_close(dev);
#endif
}

dsckpt_status rt_device_set_gemm_dtype(rt_device *dev, dsckpt_dtype dt) {
    if (dt != DSCKPT_F32 && dt != DSCKPT_BF16 && dt != DSCKPT_F16)
        return ds_err(DSCKPT_EINVAL, "GEMM operand type %s (fp32, bf16 or fp16)", dsckpt_dtype_name(dt));
    if (!dev->set_gemm_dtype) {
        if (dt == DSCKPT_F32) return DSCKPT_OK;
        return ds_err(DSCKPT_EUNSUPPORTED, "the %s device computes its GEMMs in fp32 only (asked for %s operands)",
                      dev->name, dsckpt_dtype_name(dt));
    }
    return dev->set_gemm_dtype(dev->ctx, dt);
}
