#!/usr/bin/env python3
"""A GPU load with nothing but the NVIDIA driver: no CUDA toolkit, no torch.

Used to check sparkhost's NVML collector through a real run (the machines
that have a GPU here cannot install CUDA libraries). It loads libcuda through
ctypes, JIT-compiles a small PTX busy loop with the driver, holds a device
allocation and keeps every SM busy for the given number of seconds, so
`telemetry/gpu.csv` must show utilisation, memory and power rise and fall.

    scripts/gpu-load.py SECONDS [MEMORY_GIB] [DELAY_SECONDS]
"""
import ctypes
import sys
import time

PTX = rb"""
.version 7.0
.target sm_70
.address_size 64
.visible .entry spin(.param .u64 out, .param .u32 iters)
{
  .reg .pred p;
  .reg .f32 a, b;
  .reg .u32 i, n;
  .reg .u64 o;
  ld.param.u64 o, [out];
  ld.param.u32 n, [iters];
  mov.f32 a, 1.0;
  mov.f32 b, 0.999;
  mov.u32 i, 0;
LOOP:
  fma.rn.f32 a, a, b, 0f3C23D70A;
  add.u32 i, i, 1;
  setp.lt.u32 p, i, n;
  @p bra LOOP;
  st.global.f32 [o], a;
  ret;
}
"""


def check(rc, what):
    if rc != 0:
        sys.exit(f"gpu-load: {what} failed with CUresult {rc}")


def main():
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 10.0
    gib = float(sys.argv[2]) if len(sys.argv) > 2 else 4.0
    delay = float(sys.argv[3]) if len(sys.argv) > 3 else 0.0
    time.sleep(delay)
    cuda = ctypes.CDLL("libcuda.so.1")
    check(cuda.cuInit(0), "cuInit")
    dev = ctypes.c_int()
    check(cuda.cuDeviceGet(ctypes.byref(dev), 0), "cuDeviceGet")
    ctx = ctypes.c_void_p()
    check(cuda.cuCtxCreate_v2(ctypes.byref(ctx), 0, dev), "cuCtxCreate")
    mod = ctypes.c_void_p()
    check(cuda.cuModuleLoadData(ctypes.byref(mod), ctypes.c_char_p(PTX)), "cuModuleLoadData")
    fn = ctypes.c_void_p()
    check(cuda.cuModuleGetFunction(ctypes.byref(fn), mod, b"spin"), "cuModuleGetFunction")
    hold = ctypes.c_uint64()
    check(cuda.cuMemAlloc_v2(ctypes.byref(hold), ctypes.c_size_t(int(gib * (1 << 30)))), "cuMemAlloc")
    check(cuda.cuMemsetD8_v2(hold, 1, ctypes.c_size_t(int(gib * (1 << 30)))), "cuMemset")
    out = ctypes.c_uint64()
    check(cuda.cuMemAlloc_v2(ctypes.byref(out), ctypes.c_size_t(4)), "cuMemAlloc")
    iters = ctypes.c_uint32(2_000_000)
    params = (ctypes.c_void_p * 2)(
        ctypes.cast(ctypes.byref(out), ctypes.c_void_p),
        ctypes.cast(ctypes.byref(iters), ctypes.c_void_p),
    )
    end = time.monotonic() + seconds
    launches = 0
    print(f"gpu-load: {gib} GiB held, spinning for {seconds} s", flush=True)
    while time.monotonic() < end:
        # 1,024 blocks of 256 threads covers every SM of any current GPU.
        check(cuda.cuLaunchKernel(fn, 1024, 1, 1, 256, 1, 1, 0, None, params, None), "cuLaunchKernel")
        check(cuda.cuCtxSynchronize(), "cuCtxSynchronize")
        launches += 1
    cuda.cuMemFree_v2(hold)
    cuda.cuMemFree_v2(out)
    cuda.cuCtxDestroy_v2(ctx)
    print(f"gpu-load: done, {launches} launches", flush=True)


if __name__ == "__main__":
    main()
