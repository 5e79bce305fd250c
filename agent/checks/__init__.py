"""The pre-startup validator's checks, one small function each (agent/validator.py runs them).

base.py      the Context every check reads (the command, the environment, the machine, the
             NVML facts gathered once) and Machine, the injectable view of the host
host.py      OS, host RAM, /dev/shm, open-file limit, the port, disk space
gpu.py       driver and CUDA, GPU count vs parallelism, free GPU memory, GPU health
model.py     the model's files, and whether its weights and KV cache fit
software.py  Python packages, the vLLM executable, NCCL settings, flags that blind the monitor
"""
