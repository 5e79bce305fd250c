"""What an XID means and what to do about it, from NVIDIA's Xid catalog.

Source: NVIDIA, "Analyzing Xid Errors with the Xid Catalog",
https://docs.nvidia.com/deploy/xid-errors/analyzing-xid-catalog.html (the catalog for Ampere
and newer GPUs), read on 2026-11-27 through a stored copy of that page. Mnemonics,
descriptions and the "Resolution Bucket (Immediate Action)" column are the catalog's; the
severity and the action in words are ours, derived from the bucket (BUCKET_SEVERITY,
BUCKET_ACTION) and, for the XIDs vLLM hosts meet most (reference §6), from the catalog's
trigger-condition notes (NOTES). XIDs the catalog marks "Unused" on Ampere and newer are
listed with their mnemonic because older GPUs (Volta and before) still log them.

Buckets: RESTART_APP (restart the application; the GPU is fine), RESET_GPU, RESTART_BM
(reboot the bare-metal node), RESTART_VM, CONTACT_SUPPORT (the vendor; RMA), IGNORE,
CHECK_MECHANICALS, UPDATE_SWFW, XID_154 (read the GPU's recovery action) and the catalog's
named workflows (WORKFLOW_XID_48, WORKFLOW_XID_45, WORKFLOW_NVLINK_ERR, ...).
"""

from __future__ import annotations

from dataclasses import dataclass

SEVERITIES = ("info", "warning", "critical")
UNKNOWN_XID = 999  # what NVML's event data holds when the driver could not say which XID

BUCKET_SEVERITY = {
    "IGNORE": "info",
    "WORKFLOW_XID_45": "info",  # follows another Xid: that one says what to do
    "RESTART_APP": "warning",
    "UPDATE_SWFW": "warning",
    "XID_154": "warning",
    "CHECK_UVM": "warning",
    "RESET_GPU": "critical",
    "RESTART_BM": "critical",
    "RESTART_VM": "critical",
    "CONTACT_SUPPORT": "critical",
    "CHECK_MECHANICALS": "critical",
    "WORKFLOW_XID_48": "critical",
    "WORKFLOW_NVLINK_ERR": "critical",
    "WORKFLOW_NVLINK5_ERR": "critical",
}

BUCKET_ACTION = {
    "IGNORE": "no action needed",
    "WORKFLOW_XID_45": "none on its own: follow the Xid it accompanies",
    "RESTART_APP": "restart vLLM; the GPU itself stays usable",
    "UPDATE_SWFW": "update the GPU driver and firmware",
    "XID_154": "read the GPU recovery action (nvidia-smi -q) and follow it",
    "CHECK_UVM": "check the unified-memory (UVM) driver and restart vLLM",
    "RESET_GPU": "drain the host, reset the GPU (nvidia-smi -r), then restart vLLM",
    "RESTART_BM": "drain the host and reboot the node",
    "RESTART_VM": "drain the host and restart the VM",
    "CONTACT_SUPPORT": "drain the host and contact NVIDIA or the hardware vendor",
    "CHECK_MECHANICALS": "check the GPU's auxiliary power cabling and seating",
    "WORKFLOW_XID_48": (
        "drain the host and reset the GPU or reboot the node to clear the error; "
        "if it repeats, run field diagnostics and RMA the GPU"
    ),
    "WORKFLOW_NVLINK_ERR": (
        "reset the GPU or reboot the node; if it persists, check the peer GPU or NVSwitch "
        "and contact the hardware vendor"
    ),
    "WORKFLOW_NVLINK5_ERR": "reset the GPU; if it persists, contact the hardware vendor",
}

# (xid, mnemonic, description, immediate-action bucket), in the catalog's order.
_ENTRIES = (
    (8, "ROBUST_CHANNEL_FIFO_ERROR_IDLE_TIMEOUT", "GPU stopped processing", "RESTART_APP"),
    (11, "ROBUST_CHANNEL_GR_ERROR_MISSING_HW", "Invalid or corrupted push buffer stream",
     "RESTART_APP"),
    (13, "ROBUST_CHANNEL_GR_EXCEPTION", "Graphics Engine Exception", "RESTART_APP"),
    (14, "ROBUST_CHANNEL_FAKE_ERROR", "Fake or injected error from userspace", "IGNORE"),
    (25, "ROBUST_CHANNEL_GR_ILLEGAL_NOTIFY", "Invalid or illegal push buffer stream",
     "RESTART_APP"),
    (31, "ROBUST_CHANNEL_FIFO_ERROR_MMU_ERR_FLT", "GPU memory page fault", "RESTART_APP"),
    (32, "ROBUST_CHANNEL_PBDMA_ERROR", "Invalid or corrupted push buffer stream",
     "RESTART_APP"),
    (37, "ROBUST_CHANNEL_FECS_ERR_UNIMP_FIRMWARE_METHOD", "Driver firmware error", "IGNORE"),
    (38, "ROBUST_CHANNEL_FECS_ERR_WATCHDOG_TIMEOUT", "Driver firmware error", "IGNORE"),
    (39, "ROBUST_CHANNEL_CE0_ERROR", "Copy Engine Exception", "RESTART_APP"),
    (40, "ROBUST_CHANNEL_CE1_ERROR", "Copy Engine Exception", "RESTART_APP"),
    (41, "ROBUST_CHANNEL_CE2_ERROR", "Copy Engine Exception", "RESTART_APP"),
    (43, "ROBUST_CHANNEL_RESETCHANNEL_VERIF_ERROR", "GPU stopped processing", "IGNORE"),
    (44, "ROBUST_CHANNEL_GR_FAULT_DURING_CTXSW", "Graphics Engine fault during context switch",
     "IGNORE"),
    (45, "ROBUST_CHANNEL_PREEMPTIVE_REMOVAL", "Preemptive cleanup, due to previous errors",
     "WORKFLOW_XID_45"),
    (46, "ROBUST_CHANNEL_GPU_TIMEOUT_ERROR", "GPU stopped processing", "RESET_GPU"),
    (48, "ROBUST_CHANNEL_GPU_ECC_DBE", "Double Bit ECC Error", "WORKFLOW_XID_48"),
    (54, "SILENT_RUNNING_PWR_REDUCED_CLOCKING",
     "Auxiliary power is not connected to the GPU board", "CHECK_MECHANICALS"),
    (56, "DISPLAY_CHANNEL_EXCEPTION", "Display channel exception (unused on Ampere and newer)",
     "CONTACT_SUPPORT"),
    (57, "FB_LINK_TRAINING_FAILURE_ERROR",
     "Frame-buffer link training failure (unused on Ampere and newer)", "CONTACT_SUPPORT"),
    (58, "FB_MEMORY_ERROR", "Frame-buffer memory error (unused on Ampere and newer)",
     "CONTACT_SUPPORT"),
    (60, "ROBUST_CHANNEL_SEC2_ERROR", "Video processor exception", "RESTART_APP"),
    (61, "PMU_BREAKPOINT",
     "Internal micro-controller breakpoint (unused on Ampere and newer)", "CONTACT_SUPPORT"),
    (62, "PMU_HALT_ERROR", "Internal micro-controller halt", "RESET_GPU"),
    (63, "INFOROM_DRAM_RETIREMENT_EVENT", "GPU memory remapping event", "IGNORE"),
    (64, "INFOROM_DRAM_RETIREMENT_FAILURE", "GPU memory remapping failure", "RESET_GPU"),
    (66, "ROBUST_CHANNEL_FECS_ERR_REG_ACCESS_VIOLATION", "Illegal access by driver", "IGNORE"),
    (67, "ROBUST_CHANNEL_FECS_ERR_VERIF_VIOLATION", "Illegal access by driver", "IGNORE"),
    (68, "ROBUST_CHANNEL_NVDEC0_ERROR", "NVDEC0 Exception", "RESTART_APP"),
    (69, "ROBUST_CHANNEL_GR_CLASS_ERROR", "Graphics Engine class error", "RESTART_APP"),
    (74, "NVLINK_ERROR", "NVLINK Error", "WORKFLOW_NVLINK_ERR"),
    (78, "VGPU_START_ERROR", "vGPU Start Error", "UPDATE_SWFW"),
    (79, "ROBUST_CHANNEL_GPU_HAS_FALLEN_OFF_THE_BUS", "GPU has fallen off the bus",
     "RESTART_BM"),
    (80, "PBDMA_PUSHBUFFER_CRC_MISMATCH", "Corrupted data sent to GPU", "RESTART_APP"),
    (92, "EXCESSIVE_SBE_INTERRUPTS", "High single-bit ECC error rate", "IGNORE"),
    (93, "INFOROM_ERASE_LIMIT_EXCEEDED", "Non-fatal violation of provisioned InfoROM wear limit",
     "IGNORE"),
    (94, "ROBUST_CHANNEL_CONTAINED_ERROR", "Contained memory error", "RESTART_APP"),
    (95, "ROBUST_CHANNEL_UNCONTAINED_ERROR", "Uncontained memory error", "RESET_GPU"),
    (109, "ROBUST_CHANNEL_CTXSW_TIMEOUT_ERROR", "Context Switch Timeout Error", "RESET_GPU"),
    (110, "SEC_FAULT_ERROR", "Security Fault Error", "RESET_GPU"),
    (119, "GSP_RPC_TIMEOUT", "GSP RPC Timeout", "RESET_GPU"),
    (120, "GSP_ERROR", "GSP Error", "RESET_GPU"),
    (121, "C2C_ERROR", "C2C Error", "IGNORE"),
    (122, "SPI_PMU_RPC_READ_FAIL", "SPI PMU RPC read failure (unused on Ampere and newer)",
     "CONTACT_SUPPORT"),
    (123, "SPI_PMU_RPC_WRITE_FAIL", "SPI PMU RPC write failure (unused on Ampere and newer)",
     "CONTACT_SUPPORT"),
    (136, "ALI_TRAINING_FAIL", "Link Training Failed", "RESET_GPU"),
    (137, "NVLINK_PRIV_ERR", "NVLink Privilege Error", "IGNORE"),
    (140, "UNRECOVERABLE_ECC_ERROR_ESCAPE", "ECC Unrecovered Error", "RESET_GPU"),
    (141, "ROBUST_CHANNEL_FAST_PATH_ERROR", "CUDA Fast Path Error", "IGNORE"),
    (143, "GPU_INIT_ERROR", "GPU Initialization Error", "RESET_GPU"),
    (144, "NVLINK_SAW_ERROR", "NVLINK: SAW Error", "WORKFLOW_NVLINK5_ERR"),
    (145, "NVLINK_RLW_ERROR", "NVLINK: RLW Error", "WORKFLOW_NVLINK5_ERR"),
    (146, "NVLINK_TLW_ERROR", "NVLINK: TLW Error", "WORKFLOW_NVLINK5_ERR"),
    (147, "NVLINK_TREX_ERROR", "NVLINK: TREX Error", "WORKFLOW_NVLINK5_ERR"),
    (148, "NVLINK_NVLPW_CTRL_ERROR", "NVLINK: NVLPW_CTRL Error", "WORKFLOW_NVLINK5_ERR"),
    (149, "NVLINK_NETIR_ERROR", "NVLINK: NETIR Error", "WORKFLOW_NVLINK5_ERR"),
    (150, "NVLINK_MSE_ERROR", "NVLINK: MSE Error", "WORKFLOW_NVLINK5_ERR"),
    (151, "ROBUST_CHANNEL_KEY_ROTATION_ERROR", "Key rotation Error", "RESTART_VM"),
    (154, "GPU_RECOVERY_ACTION_CHANGED", "GPU Recovery Action Changed", "XID_154"),
    (155, "NVLINK_SW_DEFINED_ERROR", "NVLINK: SW Defined Error", "RESET_GPU"),
    (156, "RESOURCE_RETIREMENT_EVENT", "Resource Retirement Event", "RESET_GPU"),
    (157, "RESOURCE_RETIREMENT_FAILURE", "Resource Retirement Failure", "IGNORE"),
    (158, "GPU_FATAL_TIMEOUT", "GPU Fatal Timeout", "RESET_GPU"),
    (159, "ROBUST_CHANNEL_CHI_NON_DATA_ERROR", "CHI Non-Data Error", "CHECK_UVM"),
)  # fmt: skip

# Our words where the catalog's notes say more than the bucket, for the XIDs of reference §6.
NOTES = {
    13: "usually a bug in the application or a kernel; restart vLLM (try --enforce-eager to "
    "isolate it); rarely hardware",
    31: "usually an illegal memory access by the application; restart vLLM; rarely driver "
    "or hardware",
    43: "the application hit a fault and had to stop; the GPU remains healthy: restart vLLM",
    45: "cleanup after the application was killed or after another error: follow the Xid it "
    "accompanies",
    63: "a memory row was marked for remapping: reset the GPU when convenient to apply it "
    "(see remapped rows pending)",
    64: "the GPU could not remap a failing memory row: reset the GPU, and contact the "
    "vendor (RMA) if it repeats",
    74: "an NVLink connection failed (or its peer did): reset the GPU or reboot the node; "
    "check the GPU at the other end of the link",
    79: "the GPU is no longer reachable over PCIe: drain the host and reboot the node; check "
    "PCIe and power, RMA if it repeats",
    92: "corrected single-bit ECC errors are arriving fast: watch for row remapping "
    "(Xid 63) and DBEs",
    94: "an uncorrectable memory error was contained to one application: restart vLLM, and "
    "reset the GPU when convenient",
    95: "an uncorrectable memory error affected several applications: drain the host and "
    "reset the GPU before restarting vLLM",
    119: "the GPU's GSP firmware did not answer: reset the GPU; power-cycle the node if it "
    "persists",
    120: "the GPU's GSP firmware reported an error: reset the GPU; power-cycle the node if "
    "it persists",
    140: "uncorrectable memory errors escaped page offlining or row remapping: reset the GPU, "
    "and contact the vendor if it repeats",
    154: "the driver changed this GPU's recovery action (none, drain P2P, drain and reset, "
    "GPU reset, node reboot): read it with nvidia-smi -q and follow it",
}

# Where our severity differs from the bucket's, and why.
SEVERITY_OVERRIDES = {
    # Catalog: IGNORE, since the row remapper handled the error; but a GPU with a pending
    # remap needs a reset, and in the field it has preceded hangs (reference §6).
    63: "warning",
    # Catalog: IGNORE; a high SBE rate is the usual precursor of remapping and DBEs.
    92: "warning",
}


@dataclass(frozen=True, slots=True)
class XidInfo:
    xid: int
    mnemonic: str
    description: str
    bucket: str  # the catalog's "Resolution Bucket (Immediate Action)", or UNKNOWN
    severity: str  # one of SEVERITIES
    action: str  # what to do, in words
    known: bool = True  # False: not in the catalog, a default was used


def _info(xid: int, mnemonic: str, description: str, bucket: str) -> XidInfo:
    severity = SEVERITY_OVERRIDES.get(xid, BUCKET_SEVERITY.get(bucket, "warning"))
    action = NOTES.get(xid, BUCKET_ACTION.get(bucket, BUCKET_ACTION["CONTACT_SUPPORT"]))
    return XidInfo(xid, mnemonic, description, bucket, severity, action)


CATALOG: dict[int, XidInfo] = {entry[0]: _info(*entry) for entry in _ENTRIES}


def lookup(xid: int) -> XidInfo:
    """Return what the catalog says about `xid`; an XID it does not list gets a cautious
    default (warning: read the kernel log), never an error."""
    info = CATALOG.get(xid)
    if info is not None:
        return info
    if xid == UNKNOWN_XID:
        description = "NVML reported an XID it could not identify"
    else:
        description = "not in the Xid catalog this agent carries"
    action = (
        "read the kernel log (dmesg | grep Xid) and NVIDIA's Xid catalog for this GPU and "
        "driver; contact the vendor if it repeats"
    )
    return XidInfo(xid, "UNKNOWN", description, "UNKNOWN", "warning", action, known=False)
