import Crypto
import Foundation
import ProvisionModel

/// Why a token request was refused.
public enum TokenError: Error, Sendable, Equatable, CustomStringConvertible {
    case invalid(String)
    case exists(String)
    case notFound(String)

    public var description: String {
        switch self {
        case .invalid(let message): return message
        case .exists(let name): return "a token named '\(name)' exists already"
        case .notFound(let name): return "no token named '\(name)'"
        }
    }
}

extension Reconciler {
    /// Secrets are `pvn_` and 43 characters of base64url: 256 random bits.
    public static func newSecret() -> String {
        var generator = SystemRandomNumberGenerator()
        let bytes = (0..<32).map { _ in UInt8.random(in: .min ... .max, using: &generator) }
        return "pvn_" + Base64URL.encode(bytes)
    }

    static func hash(_ secret: String) -> String {
        SHA256.hash(data: Data(secret.utf8)).map { String(format: "%02x", $0) }.joined()
    }

    /// The caller a secret belongs to, or nil when it is unknown, revoked or expired. Marks
    /// the token used.
    public func authenticate(_ secret: String) -> Caller? {
        let hash = Self.hash(secret)
        guard let token = currentState.tokens.values.first(where: { $0.secretHash == hash }) else { return nil }
        let now = currentTime
        if let expiresAt = token.expiresAt, expiresAt <= now { return nil }
        noteTokenUsed(token.name, at: now)
        return Caller(token: token.name, team: token.team, role: token.role)
    }

    /// Creates a token; its secret is in the answer and nowhere else.
    public func createToken(_ request: CreateTokenRequest) async throws -> CreatedToken {
        guard Self.isValidName(request.name), Self.isValidName(request.team) else {
            throw TokenError.invalid("token and team names are 1 to 63 lowercase letters, digits and '-'")
        }
        var expiresAt: TimestampMilliseconds?
        if let expires = request.expires {
            guard case .milliseconds(let milliseconds) = DurationText.parse(expires), milliseconds > 0 else {
                throw TokenError.invalid("expires must be a duration such as 90d, not '\(expires)'")
            }
            expiresAt = currentTime + milliseconds
        }
        let secret = Self.newSecret()
        let token = StoredToken(name: request.name, team: request.team, role: request.role, createdAt: currentTime,
                                expiresAt: expiresAt, secretHash: Self.hash(secret))
        try await commit { current in
            guard current.tokens[request.name] == nil else { throw TokenError.exists(request.name) }
            var next = current
            next.tokens[request.name] = token
            return (next, [], [], ())
        }
        return CreatedToken(token: info(token), secret: secret)
    }

    public func listTokens() -> [TokenInfo] {
        currentState.tokens.values.sorted { $0.name < $1.name }.map(info)
    }

    /// Revokes a token: the next request with it is refused.
    public func revokeToken(_ name: String) async throws {
        try await commit { current in
            guard current.tokens[name] != nil else { throw TokenError.notFound(name) }
            var next = current
            next.tokens[name] = nil
            return (next, [], [], ())
        }
    }

    /// Makes `secret` the secret of the `admin` token (team `admin`), creating it if needed:
    /// the first admin token, from `PROVISION_ADMIN_TOKEN` or a generated one.
    public func ensureAdminToken(secret: String) async throws {
        let hash = Self.hash(secret)
        let now = currentTime
        try await commit { current in
            var next = current
            if next.tokens["admin"]?.secretHash != hash || next.tokens["admin"]?.role != .admin {
                next.tokens["admin"] = StoredToken(name: "admin", team: "admin", role: .admin, createdAt: now, expiresAt: nil,
                                                   secretHash: hash)
            }
            return (next, [], [], ())
        }
    }

    /// Whether any admin token exists.
    public var hasAdminToken: Bool { currentState.tokens.values.contains { $0.role == .admin } }

    private func info(_ token: StoredToken) -> TokenInfo {
        TokenInfo(name: token.name, team: token.team, role: token.role, createdAt: Timestamp.format(token.createdAt),
                  expiresAt: token.expiresAt.map(Timestamp.format), lastUsedAt: tokenLastUsed(token.name).map(Timestamp.format))
    }

    private static func isValidName(_ name: String) -> Bool {
        (1...63).contains(name.count) && name.allSatisfy { $0.isASCII && ($0.isLowercase || $0.isNumber || $0 == "-") }
    }
}
