import ArgumentParser
import Foundation
import ProvisionModel

struct TokenCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "token", abstract: "Create, list and revoke API tokens (an admin token is needed).",
        subcommands: [TokenCreateCommand.self, TokenListCommand.self, TokenRevokeCommand.self])
}

extension TokenRole: ExpressibleByArgument {}

struct TokenCreateCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "create", abstract: "Create a token and print its secret (shown this once only).")

    @Argument(help: "The token's name.")
    var name: String

    @Option(name: .long, help: "The team whose products it may see and change.")
    var team: String

    @Option(name: .long, help: "reader, editor or admin.")
    var role: TokenRole

    @Option(name: .long, help: "Expire after this long (e.g. 90d); default: never.")
    var expires: String?

    @OptionGroup var options: ClientOptions

    func run() async throws {
        let body = try JSONEncoder().encode(CreateTokenRequest(name: name, team: team, role: role, expires: expires))
        let reply = try await options.client.send(.POST, "/v1/tokens", body: body)
        guard reply.status == 201 else {
            printError(reply.errorMessage)
            throw ExitCode(1)
        }
        let created = try reply.decode(CreatedToken.self)
        print(created.secret)
        printError("token \(created.token.name) (team \(created.token.team), \(created.token.role.rawValue)) created; the secret above is not shown again")
    }
}

struct TokenListCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "List tokens (never their secrets).")

    @OptionGroup var options: ClientOptions

    func run() async throws {
        let tokens = try await options.client.call(.GET, "/v1/tokens", as: [TokenInfo].self)
        let rows = tokens.map { [$0.name, $0.team, $0.role.rawValue, $0.createdAt, $0.expiresAt ?? "never", $0.lastUsedAt ?? "-"] }
        print(TextTable.render([["NAME", "TEAM", "ROLE", "CREATED", "EXPIRES", "LAST-USED"]] + rows), terminator: "")
    }
}

struct TokenRevokeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "revoke", abstract: "Revoke a token: its next request is refused.")

    @Argument(help: "The token's name.")
    var name: String

    @OptionGroup var options: ClientOptions

    func run() async throws {
        let reply = try await options.client.send(.DELETE, "/v1/tokens/\(name.urlComponentEncoded)")
        guard reply.status == 200 else {
            printError(reply.errorMessage)
            throw ExitCode(1)
        }
        print("token/\(name) revoked")
    }
}
