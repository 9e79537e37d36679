//! The operator manual's four roles (section 8.7) and what each may do: one table, in code.

use serde::{Deserialize, Serialize};

/// A role bound to an API token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything.
    Admin,
    /// Service management (pause/resume, retry, rescan) and logs.
    Operator,
    /// Logs and read-only status.
    Developer,
    /// The audit log (read-only) and logs.
    Auditor,
}

/// What a call needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Permission {
    /// Packets, paths, pauses, the `why` view.
    ReadStatus,
    /// The node's recent log lines.
    ReadLogs,
    /// The audit log and its verification.
    ReadAudit,
    /// Pause and resume (node, chain, path), retry an invalid packet, rescan blocks.
    ManageService,
    /// Let a path halted by the equivocation guard go on: a safety decision, admins only.
    ResumeHalted,
    /// Propose, approve or reject a change of the DVN's signer set (key rotation): admins only.
    ManageKeys,
}

impl Permission {
    pub const ALL: [Permission; 6] = [
        Permission::ReadStatus,
        Permission::ReadLogs,
        Permission::ReadAudit,
        Permission::ManageService,
        Permission::ResumeHalted,
        Permission::ManageKeys,
    ];
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Admin, Role::Operator, Role::Developer, Role::Auditor];

    /// The permission table.
    pub fn allows(self, permission: Permission) -> bool {
        use Permission::*;
        match self {
            Role::Admin => true,
            Role::Operator => matches!(permission, ReadStatus | ReadLogs | ManageService),
            Role::Developer => matches!(permission, ReadStatus | ReadLogs),
            Role::Auditor => matches!(permission, ReadAudit | ReadLogs),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Operator => "operator",
            Role::Developer => "developer",
            Role::Auditor => "auditor",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == text)
    }
}

/// The table as text, for `dvn admin roles`.
pub fn render_table() -> String {
    let mut out = format!("{:<16}", "permission");
    for role in Role::ALL {
        out.push_str(&format!("{:<11}", role.as_str()));
    }
    out.push('\n');
    for permission in Permission::ALL {
        let name = serde_json::to_value(permission)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        out.push_str(&format!("{name:<16}"));
        for role in Role::ALL {
            out.push_str(&format!(
                "{:<11}",
                if role.allows(permission) { "yes" } else { "-" }
            ));
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_manuals_roles() {
        use Permission::*;
        assert!(Permission::ALL.iter().all(|p| Role::Admin.allows(*p)));
        assert!(Role::Operator.allows(ManageService) && !Role::Operator.allows(ReadAudit));
        assert!(!Role::Operator.allows(ResumeHalted));
        assert!(!Role::Operator.allows(ManageKeys) && !Role::Developer.allows(ManageKeys));
        assert!(Role::Developer.allows(ReadStatus) && !Role::Developer.allows(ManageService));
        assert!(Role::Auditor.allows(ReadAudit) && !Role::Auditor.allows(ReadStatus));
        for role in Role::ALL {
            assert!(role.allows(ReadLogs), "every role reads logs");
            assert_eq!(Role::parse(role.as_str()), Some(role));
        }
        assert!(render_table().contains("resume_halted   yes        -"));
    }
}
