//! The stack file of `serin up` (owned by the runtime work; see runtime crate).
