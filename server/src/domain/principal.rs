//! Who is calling.

use crate::domain::model::UserKind;

/// The kind of a token's subject.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PrincipalKind {
    /// A team member.
    Internal,
    /// A customer, supplier or guest.
    External,
    /// A sibling microservice.
    Service,
}

/// The authenticated caller of one request.
#[derive(Clone, Debug)]
pub struct Principal {
    pub tenant_id: String,
    /// The token's `sub`.
    pub id: String,
    pub kind: PrincipalKind,
    pub email: Option<String>,
    pub name: Option<String>,
    /// For a service principal: the user named by `x-parley-act-as`.
    pub acting_for: Option<String>,
    /// The directory kind of the user the call is judged as: the act-as user's entry for a
    /// service acting for a user, the principal's own entry (or the kind its first call just
    /// inserted) for a user principal, `None` for a service acting as administrator. Filled in
    /// once the directory has been read; `None` until then.
    pub directory_kind: Option<UserKind>,
    /// Whether the directory has been read for this call, so `directory_kind` (and the
    /// entry's status) is known. A read of one conversation reads the caller's entry in its
    /// own statement; until then, no rule may judge the caller ([`crate::domain::visibility::viewer`]
    /// refuses to).
    pub directory_read: bool,
}

/// Whom a call is judged as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Actor {
    /// A user of the directory (a user principal, or a service acting for one).
    User(String),
    /// A service principal acting as its tenant's administrator: policy checks pass,
    /// invariants still hold.
    Admin(String),
}

impl Principal {
    pub fn is_service(&self) -> bool {
        self.kind == PrincipalKind::Service
    }

    /// Whom this call is judged as.
    pub fn actor(&self) -> Actor {
        match (&self.kind, &self.acting_for) {
            (PrincipalKind::Service, Some(user)) => Actor::User(user.clone()),
            (PrincipalKind::Service, None) => Actor::Admin(self.id.clone()),
            _ => Actor::User(self.id.clone()),
        }
    }
}

impl Actor {
    /// The id recorded as the actor of events (`added_by`, `removed_by`, …).
    pub fn id(&self) -> &str {
        match self {
            Actor::User(id) | Actor::Admin(id) => id,
        }
    }

    pub fn user_id(&self) -> Option<&str> {
        match self {
            Actor::User(id) => Some(id),
            Actor::Admin(_) => None,
        }
    }
}
