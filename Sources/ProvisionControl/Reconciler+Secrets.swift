import Foundation
import ProvisionModel

/// Why a secret request was refused.
public enum SecretError: Error, Sendable, Equatable, CustomStringConvertible {
    case invalid(String)
    case notFound(team: String, name: String)

    public var description: String {
        switch self {
        case .invalid(let message): return message
        case .notFound(let team, let name): return "team '\(team)' has no secret '\(name)'"
        }
    }
}

extension Reconciler {
    /// The largest secret value: a key, a password, a URL or a certificate.
    public static let secretBytesMax = 16 * 1024

    /// Stores `value` as the team's secret `name` (the caller's team; an admin names any),
    /// sealed. Products of the team that use it restart, so that a rotated secret takes
    /// effect now, not at the next failure.
    public func setSecret(_ name: String, _ request: SetSecretRequest, as caller: Caller) async throws -> SecretInfo {
        let team = try secretTeam(request.team, for: caller, to: "set secrets")
        guard ValueReference.isValidName(name) else {
            throw SecretError.invalid("a secret's name is letters, digits, '_', '-' and '.', at most 253 of them")
        }
        guard !request.value.isEmpty, request.value.utf8.count <= Self.secretBytesMax else {
            throw SecretError.invalid("a secret's value is 1 to \(Self.secretBytesMax) bytes")
        }
        let id = StoredSecret.id(team: team, name: name)
        let sealed = try secretSealer.seal(request.value, id: id)
        let now = currentTime
        let stored = try await commit { current in
            var next = current
            var secret = StoredSecret(team: team, name: name, createdAt: now, updatedAt: now, sealed: sealed)
            if let existing = current.secrets[id] { secret.createdAt = existing.createdAt }
            next.secrets[id] = secret
            return (next, [], [], secret)
        }
        await restartProducts(usingSecret: name, of: team)
        return info(stored)
    }

    /// The caller's team's secrets (an admin's: every team's, or `team`'s), never their values.
    public func listSecrets(team: String?, as caller: Caller) throws -> [SecretInfo] {
        let visible = caller.isAdmin ? team : try secretTeam(team, for: caller, to: "list secrets", needsEditor: false)
        return currentState.secrets.values.filter { visible == nil || $0.team == visible }
            .sorted { ($0.team, $0.name) < ($1.team, $1.name) }.map(info)
    }

    public func deleteSecret(_ name: String, team: String?, as caller: Caller) async throws {
        let team = try secretTeam(team, for: caller, to: "delete secrets")
        let id = StoredSecret.id(team: team, name: name)
        try await commit { current in
            guard current.secrets[id] != nil else { throw SecretError.notFound(team: team, name: name) }
            var next = current
            next.secrets[id] = nil
            return (next, [], [], ())
        }
        await restartProducts(usingSecret: name, of: team)
    }

    /// The values of `team`'s secrets, by name, for its products' sinks. A secret that does
    /// not open (the key changed) is left out, so the sink says it is missing.
    func secretValues(of team: String?) -> [String: String] {
        guard let team else { return [:] }
        var values: [String: String] = [:]
        for (name, secret) in currentState.secrets(of: team) {
            do {
                values[name] = try secretSealer.open(secret.sealed, id: secret.id)
            } catch {
                logger.error("a secret cannot be opened", metadata: ["team": "\(team)", "secret": "\(name)", "error": "\(error)"])
            }
        }
        return values
    }

    /// The team a secret request acts on: the caller's own (naming another is refused), or
    /// for an admin the one named.
    private func secretTeam(_ named: String?, for caller: Caller, to action: String, needsEditor: Bool = true) throws -> String {
        if caller.isAdmin {
            guard let named else { throw SecretError.invalid("an admin names the team: ?team= or \"team\"") }
            return named
        }
        if let named, named != caller.team {
            throw AccessDenied("token '\(caller.token)' of team '\(caller.team)' cannot \(action) of team '\(named)'")
        }
        if needsEditor, caller.role < .editor { throw AccessDenied.needsEditor(caller, to: action) }
        return caller.team
    }

    private func restartProducts(usingSecret name: String, of team: String) async {
        let users = currentState.products.values.filter { stored in
            stored.product.metadata.team == team && !stored.deleting
                && SecretReferences.find(in: stored.product.spec).contains { $0.reference == .secret(name) }
        }
        for stored in users { await restartRun(stored.product.name) }
    }

    private func info(_ secret: StoredSecret) -> SecretInfo {
        SecretInfo(team: secret.team, name: secret.name, createdAt: Timestamp.format(secret.createdAt),
                   updatedAt: Timestamp.format(secret.updatedAt))
    }
}
