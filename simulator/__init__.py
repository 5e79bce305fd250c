"""Simulated vLLM hosts: the same /metrics, /health and logs as vLLM, with scripted failures.

No Django here. The pieces, from the inside out:

    catalog, engine_args, kv_sizing   models and GPUs; vLLM's arguments; KV blocks from memory
    workload, perf, scheduler         clients; step duration; the V1 scheduler, a tick at a time
    stats, histogram, vllm_metrics    counters and histograms; vLLM's families and buckets
    startup, failures, logs           vLLM's log lines and their file
    gpu, nvml, process, system        GPUs and a pynvml look-alike; a psutil look-alike tree,
                                      and the machine's RAM and disks
    scenario, scenarios/*.toml        timelines of effects (see scenarios/README.md)
    run, engine                       one vLLM process's state; SimulatedVllm.step(dt)
    exposition, server, dev_ops       /metrics via prometheus_client; aiohttp endpoints
    supervised, vllm_process          the supervisor over a simulated vLLM; one as a real process
    history                           labelled runs of scenarios, for training and evaluation
    host, fleet, main, measure        a host with the real agent; the fleet and its clock;
                                      `sentinel-simulate`; `python -m simulator.measure`
"""
