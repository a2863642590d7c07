//! Who is calling.

use crate::domain::model::{Candidate, User, UserKind, UserStatus};
use crate::error::Error;

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

/// What the directory says of the user a call is judged as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DirectoryVerdict {
    /// Judge the call with this kind (`None`: a service acting as administrator).
    Known(Option<UserKind>),
    /// A user principal's first call: it joins the directory with this kind, from its token.
    Add(UserKind),
}

/// Judges the caller by the directory entry of the user the call is judged as (`entry`, just
/// read, of which only its kind and status count): a service may act only for a user of the
/// directory who is active; a deactivated user may not call at all; a user principal with no
/// entry yet is added from its token (SPEC §5, rule 18 reads the kind).
pub fn judge_directory(
    p: &Principal,
    entry: Option<&Candidate>,
) -> Result<DirectoryVerdict, Error> {
    match (p.kind, &p.acting_for) {
        (PrincipalKind::Service, None) => Ok(DirectoryVerdict::Known(None)),
        (PrincipalKind::Service, Some(user_id)) => match entry {
            None => Err(Error::UserNotFound(user_id.clone())),
            Some(u) if u.status == UserStatus::Deactivated => {
                Err(Error::UserDeactivated(user_id.clone()))
            }
            Some(u) => Ok(DirectoryVerdict::Known(Some(u.kind))),
        },
        _ => match entry {
            Some(u) if u.status == UserStatus::Deactivated => {
                Err(Error::UserDeactivated(p.id.clone()))
            }
            Some(u) => Ok(DirectoryVerdict::Known(Some(u.kind))),
            None if p.kind == PrincipalKind::External => {
                Ok(DirectoryVerdict::Add(UserKind::External))
            }
            None => Ok(DirectoryVerdict::Add(UserKind::Internal)),
        },
    }
}

/// `p` judged by the directory entry of the user the call is judged as (`entry`, read with the
/// call's other data), unless the call judged it already ([`Principal::directory_read`]). A
/// user principal without an entry yet is [`Error::NewcomerEntry`]: it is added outside what
/// the call read (its snapshot, or its transaction, which may yet roll back), then the call
/// runs again.
pub fn judged<'p>(
    p: &'p Principal,
    entry: Option<&Candidate>,
) -> Result<std::borrow::Cow<'p, Principal>, Error> {
    if p.directory_read {
        return Ok(std::borrow::Cow::Borrowed(p));
    }
    let mut resolved = p.clone();
    resolved.directory_kind = match judge_directory(p, entry)? {
        DirectoryVerdict::Known(kind) => kind,
        DirectoryVerdict::Add(_) => return Err(Error::NewcomerEntry),
    };
    resolved.directory_read = true;
    Ok(std::borrow::Cow::Owned(resolved))
}

/// The directory entry a user principal's first call adds, from its token's claims.
pub fn entry_from_token(p: &Principal, kind: UserKind, now: i64) -> User {
    User {
        tenant_id: p.tenant_id.clone(),
        id: p.id.clone(),
        display_name: p.name.clone().unwrap_or_else(|| p.id.clone()),
        email: p.email.clone().unwrap_or_default(),
        kind,
        status: UserStatus::Active,
        create_time: now,
        update_time: now,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(kind: PrincipalKind, acting_for: Option<&str>) -> Principal {
        Principal {
            tenant_id: "t".into(),
            id: "p".into(),
            kind,
            email: None,
            name: None,
            acting_for: acting_for.map(str::to_owned),
            directory_kind: None,
            directory_read: false,
        }
    }

    fn entry(kind: UserKind, status: UserStatus) -> Candidate {
        Candidate {
            id: "u".into(),
            kind,
            status,
        }
    }

    #[test]
    fn the_directory_judges_the_caller() {
        use DirectoryVerdict::{Add, Known};
        use PrincipalKind::{External, Internal, Service};
        let active_external = entry(UserKind::External, UserStatus::Active);
        let gone = entry(UserKind::Internal, UserStatus::Deactivated);
        // The entry's kind wins over the token's.
        assert_eq!(
            judge_directory(&principal(Internal, None), Some(&active_external)).ok(),
            Some(Known(Some(UserKind::External)))
        );
        assert!(matches!(
            judge_directory(&principal(Internal, None), Some(&gone)),
            Err(Error::UserDeactivated(_))
        ));
        assert_eq!(
            judge_directory(&principal(Internal, None), None).ok(),
            Some(Add(UserKind::Internal))
        );
        assert_eq!(
            judge_directory(&principal(External, None), None).ok(),
            Some(Add(UserKind::External))
        );
        // A service acts only for an active user of the directory; as administrator it needs none.
        assert_eq!(
            judge_directory(&principal(Service, None), None).ok(),
            Some(Known(None))
        );
        assert!(matches!(
            judge_directory(&principal(Service, Some("u")), None),
            Err(Error::UserNotFound(_))
        ));
        assert!(matches!(
            judge_directory(&principal(Service, Some("u")), Some(&gone)),
            Err(Error::UserDeactivated(_))
        ));
        assert_eq!(
            judge_directory(&principal(Service, Some("u")), Some(&active_external)).ok(),
            Some(Known(Some(UserKind::External)))
        );
    }
}
