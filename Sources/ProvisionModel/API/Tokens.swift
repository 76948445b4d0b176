/// What a token may do. Each role includes the ones before it.
public enum TokenRole: String, Sendable, Codable, CaseIterable, Comparable {
    /// The catalog, and the status of its team's products.
    case reader
    /// Also create, change, delete, pause, resume and redeliver its team's products.
    case editor
    /// Everything, every team's objects and the tokens.
    case admin

    private var rank: Int { Self.allCases.firstIndex(of: self)! }

    public static func < (lhs: TokenRole, rhs: TokenRole) -> Bool { lhs.rank < rhs.rank }
}

/// Who sends a request: the token's name, team and role.
public struct Caller: Sendable, Equatable {
    public var token: String
    public var team: String
    public var role: TokenRole

    public init(token: String, team: String, role: TokenRole) {
        self.token = token
        self.team = team
        self.role = role
    }

    /// A server started with `--dev` or `--demo`: no tokens, everything allowed.
    public static let development = Caller(token: "dev", team: "dev", role: .admin)

    public var isAdmin: Bool { role == .admin }

    /// Whether the caller sees and acts on objects of `team` (nil: an object no team owns,
    /// which only admins manage).
    public func owns(team objectTeam: String?) -> Bool { isAdmin || objectTeam == team }
}

/// A token as listed: never its secret.
public struct TokenInfo: Sendable, Equatable, Codable {
    public var name: String
    public var team: String
    public var role: TokenRole
    public var createdAt: String
    public var expiresAt: String?
    /// The last request it authenticated since the server started.
    public var lastUsedAt: String?

    public init(name: String, team: String, role: TokenRole, createdAt: String, expiresAt: String?, lastUsedAt: String?) {
        self.name = name
        self.team = team
        self.role = role
        self.createdAt = createdAt
        self.expiresAt = expiresAt
        self.lastUsedAt = lastUsedAt
    }
}

/// The body of `POST /v1/tokens`.
public struct CreateTokenRequest: Sendable, Equatable, Codable {
    public var name: String
    public var team: String
    public var role: TokenRole
    /// A duration such as `90d`; none: the token does not expire.
    public var expires: String?

    public init(name: String, team: String, role: TokenRole, expires: String? = nil) {
        self.name = name
        self.team = team
        self.role = role
        self.expires = expires
    }
}

/// The answer to `POST /v1/tokens`: the only time the secret is shown.
public struct CreatedToken: Sendable, Equatable, Codable {
    public var token: TokenInfo
    public var secret: String

    public init(token: TokenInfo, secret: String) {
        self.token = token
        self.secret = secret
    }
}

/// A team's secret as listed: never its value.
public struct SecretInfo: Sendable, Equatable, Codable {
    public var team: String
    public var name: String
    public var createdAt: String
    public var updatedAt: String

    public init(team: String, name: String, createdAt: String, updatedAt: String) {
        self.team = team
        self.name = name
        self.createdAt = createdAt
        self.updatedAt = updatedAt
    }
}

/// The body of `PUT /v1/secrets/{name}`: the value, and for an admin the team it is for
/// (the caller's own team otherwise).
public struct SetSecretRequest: Sendable, Codable {
    public var value: String
    public var team: String?

    public init(value: String, team: String? = nil) {
        self.value = value
        self.team = team
    }
}
