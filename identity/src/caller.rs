//! The verified caller and its roles.

use std::fmt;

/// What a caller may do, from the roles its token carries. Roles the
/// service does not know are ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Opens, fills and checks out their own baskets; pays and cancels
    /// their own orders; reads their own baskets and orders.
    Customer,
    /// Manages the catalog, ships and delivers orders, reads every order.
    Staff,
    /// Everything, operator fields and endpoints included.
    Admin,
}

impl Role {
    /// The role a token names `name`, if it is one of ours.
    #[must_use]
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "customer" => Some(Self::Customer),
            "staff" => Some(Self::Staff),
            "admin" => Some(Self::Admin),
            _ => None,
        }
    }

    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Customer => "customer",
            Self::Staff => "staff",
            Self::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of [`Role`]s.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Roles(u8);

impl Roles {
    fn bit(role: Role) -> u8 {
        match role {
            Role::Customer => 1,
            Role::Staff => 2,
            Role::Admin => 4,
        }
    }

    #[must_use]
    pub fn with(self, role: Role) -> Self {
        Self(self.0 | Self::bit(role))
    }

    #[must_use]
    pub fn contains(self, role: Role) -> bool {
        self.0 & Self::bit(role) != 0
    }

    #[must_use]
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The roles in the set, in [`Role`] order.
    pub fn iter(self) -> impl Iterator<Item = Role> {
        [Role::Customer, Role::Staff, Role::Admin]
            .into_iter()
            .filter(move |role| self.contains(*role))
    }
}

impl FromIterator<Role> for Roles {
    fn from_iter<I: IntoIterator<Item = Role>>(roles: I) -> Self {
        roles.into_iter().fold(Self::default(), Self::with)
    }
}

/// A caller whose token verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The token's subject (`sub`): the user, or a client's service
    /// account.
    pub subject: String,
    /// The subject as a UUID, which is what eshop's customer ids are: the
    /// subject itself when it is one (Keycloak's are), else a UUID derived
    /// from the issuer and the subject (name-based, version 5), the same
    /// for the same user every time.
    pub subject_id: uuid::Uuid,
    /// The client the token was issued to (`azp`, or `client_id`).
    pub client_id: Option<String>,
    pub roles: Roles,
    /// When the token expires, in seconds since the Unix epoch (UTC).
    pub expires_at: u64,
}

impl Caller {
    #[must_use]
    pub fn has(&self, role: Role) -> bool {
        self.roles.contains(role)
    }

    /// The actor recorded in events' metadata: the subject, and the client
    /// after a slash when the token names one (`<sub>/<client>`).
    #[must_use]
    pub fn actor(&self) -> String {
        match &self.client_id {
            Some(client) => format!("{}/{client}", self.subject),
            None => self.subject.clone(),
        }
    }
}

/// See [`Caller::subject_id`].
pub(crate) fn subject_id(issuer: &str, subject: &str) -> uuid::Uuid {
    uuid::Uuid::parse_str(subject).unwrap_or_else(|_| {
        uuid::Uuid::new_v5(
            &uuid::Uuid::NAMESPACE_URL,
            format!("{issuer}#{subject}").as_bytes(),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subject_is_its_own_id_when_it_is_a_uuid_and_a_stable_derived_one_otherwise() {
        let keycloak = "6f1d2c55-0d8e-4a55-9f2b-1c1e2f3a4b5c";
        assert_eq!(
            subject_id("http://kc/realms/eshop", keycloak).to_string(),
            keycloak
        );
        let auth0 = subject_id(
            "https://shop.eu.auth0.com/",
            "auth0|5f7c8ec7c33c6c004bbafe82",
        );
        assert_eq!(
            auth0,
            subject_id(
                "https://shop.eu.auth0.com/",
                "auth0|5f7c8ec7c33c6c004bbafe82"
            )
        );
        assert_eq!(auth0.get_version_num(), 5);
        // The same subject at another issuer is another person.
        assert_ne!(
            auth0,
            subject_id("https://other.auth0.com/", "auth0|5f7c8ec7c33c6c004bbafe82")
        );
    }

    #[test]
    fn roles_hold_what_was_added_and_nothing_else() {
        let roles: Roles = [Role::Customer, Role::Admin].into_iter().collect();
        assert!(roles.contains(Role::Customer) && roles.contains(Role::Admin));
        assert!(!roles.contains(Role::Staff));
        assert_eq!(
            roles.iter().collect::<Vec<_>>(),
            [Role::Customer, Role::Admin]
        );
        assert!(Roles::default().is_empty());
    }

    #[test]
    fn only_our_role_names_parse() {
        for role in [Role::Customer, Role::Staff, Role::Admin] {
            assert_eq!(Role::parse(role.as_str()), Some(role));
        }
        assert_eq!(Role::parse("offline_access"), None);
        assert_eq!(Role::parse("Admin"), None);
    }
}
