import ArgumentParser
import Foundation
import ProvisionModel

struct SecretCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "secret",
        abstract: "Set, list and delete a team's secrets, which its specs name as ${secret:NAME} (an editor or admin token is needed).",
        subcommands: [SecretSetCommand.self, SecretListCommand.self, SecretDeleteCommand.self])
}

struct SecretSetCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "set",
        abstract: "Set a secret from standard input, a file or an environment variable (never from an argument, which other users can see).")

    @Argument(help: "The secret's name.")
    var name: String

    @Option(name: .long, help: "The team it is for (an admin's token must name one; default: the token's team).")
    var team: String?

    @Option(name: .long, help: "Read the value from this file.")
    var fromFile: String?

    @Option(name: .long, help: "Read the value from this environment variable.")
    var fromEnv: String?

    @OptionGroup var options: ClientOptions

    func validate() throws {
        if fromFile != nil, fromEnv != nil { throw ValidationError("give --from-file or --from-env, not both") }
    }

    func run() async throws {
        var value: String
        if let fromFile {
            guard let data = FileManager.default.contents(atPath: fromFile) else { throw ValidationError("cannot read \(fromFile)") }
            value = String(decoding: data, as: UTF8.self)
        } else if let fromEnv {
            guard let text = ProcessInfo.processInfo.environment[fromEnv], !text.isEmpty else {
                throw ValidationError("the environment variable \(fromEnv) is not set")
            }
            value = text
        } else {
            value = String(decoding: FileHandle.standardInput.readDataToEndOfFile(), as: UTF8.self)
        }
        // A value typed or echoed ends with a newline that is not part of it.
        if value.hasSuffix("\n") { value.removeLast() }
        if value.hasSuffix("\r") { value.removeLast() }
        let body = try JSONEncoder().encode(SetSecretRequest(value: value, team: team))
        let reply = try await options.client.send(.PUT, "/v1/secrets/\(name.urlComponentEncoded)", body: body)
        guard reply.status == 200 else {
            printError(reply.errorMessage)
            throw ExitCode(1)
        }
        let secret = try reply.decode(SecretInfo.self)
        print("secret/\(secret.name) set for team \(secret.team)")
    }
}

struct SecretListCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "List secrets (never their values).")

    @Option(name: .long, help: "Only this team's (an admin sees every team's by default).")
    var team: String?

    @OptionGroup var options: ClientOptions

    func run() async throws {
        let query = team.map { "?team=\($0.urlComponentEncoded)" } ?? ""
        let secrets = try await options.client.call(.GET, "/v1/secrets" + query, as: [SecretInfo].self)
        let rows = secrets.map { [$0.team, $0.name, $0.createdAt, $0.updatedAt] }
        print(TextTable.render([["TEAM", "NAME", "CREATED", "UPDATED"]] + rows), terminator: "")
    }
}

struct SecretDeleteCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "delete", abstract: "Delete a secret; products that use it stop working.")

    @Argument(help: "The secret's name.")
    var name: String

    @Option(name: .long, help: "The team it belongs to (an admin's token must name one).")
    var team: String?

    @OptionGroup var options: ClientOptions

    func run() async throws {
        let query = team.map { "?team=\($0.urlComponentEncoded)" } ?? ""
        let reply = try await options.client.send(.DELETE, "/v1/secrets/\(name.urlComponentEncoded)" + query)
        guard reply.status == 200 else {
            printError(reply.errorMessage)
            throw ExitCode(1)
        }
        print("secret/\(name) deleted")
    }
}
