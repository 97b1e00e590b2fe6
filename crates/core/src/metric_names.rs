//! The names of Slipway's system metrics: the contract between what
//! publishes them (the CloudWatch agent's settings the instance agent
//! writes, the local fleet's sampler) and what reads them (the formation).

pub const NAMESPACE: &str = "Slipway/System";
pub const CPU: &str = "cpu_percent";
pub const MEMORY: &str = "memory_percent";
pub const PROCESS_CPU: &str = "process_cpu_percent";
pub const PROCESS_MEMORY: &str = "process_memory_bytes";
pub const PROCESS_DIMENSION: &str = "slipway:process";
