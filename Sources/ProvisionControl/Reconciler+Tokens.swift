import Crypto
import Foundation
import ProvisionModel
import Synchronization

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
        let hexDigits = Array("0123456789abcdef".utf8)
        var text: [UInt8] = []
        text.reserveCapacity(64)
        for byte in SHA256.hash(data: Data(secret.utf8)) {
            text.append(hexDigits[Int(byte >> 4)])
            text.append(hexDigits[Int(byte & 0x0f)])
        }
        return String(decoding: text, as: UTF8.self)
    }

    /// The caller a secret belongs to, or nil when it is unknown, revoked or expired. Marks
    /// the token used. Not on the actor: every request asks, and the index it reads is
    /// replaced whole by each commit that changes tokens, so a revocation counts from the
    /// next request.
    public nonisolated func authenticate(_ secret: String) -> Caller? {
        tokenIndex.authenticate(hash: Self.hash(secret), now: clock())
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
                  expiresAt: token.expiresAt.map(Timestamp.format), lastUsedAt: tokenIndex.lastUsed(token.name).map(Timestamp.format))
    }

    private static func isValidName(_ name: String) -> Bool {
        (1...63).contains(name.count) && name.allSatisfy { $0.isASCII && ($0.isLowercase || $0.isNumber || $0 == "-") }
    }
}

/// The tokens by the hash of their secret, for authentication without the actor, and when
/// each last authenticated a request since the server started (not stored: a write per
/// request would cost more than the answer).
final class TokenIndex: Sendable {
    private struct Entry: Sendable {
        var caller: Caller
        var expiresAt: TimestampMilliseconds?
    }

    private let byHash = Mutex<[String: Entry]>([:])
    private let lastUsedAt = Mutex<[String: TimestampMilliseconds]>([:])

    func replace(with tokens: some Collection<StoredToken>) {
        var entries: [String: Entry] = [:]
        for token in tokens {
            entries[token.secretHash] = Entry(caller: Caller(token: token.name, team: token.team, role: token.role), expiresAt: token.expiresAt)
        }
        byHash.withLock { $0 = entries }
    }

    func authenticate(hash: String, now: TimestampMilliseconds) -> Caller? {
        guard let entry = byHash.withLock({ $0[hash] }) else { return nil }
        if let expiresAt = entry.expiresAt, expiresAt <= now { return nil }
        lastUsedAt.withLock { $0[entry.caller.token] = now }
        return entry.caller
    }

    func lastUsed(_ name: String) -> TimestampMilliseconds? { lastUsedAt.withLock { $0[name] } }
}
