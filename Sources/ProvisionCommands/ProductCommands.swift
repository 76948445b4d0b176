import ArgumentParser
import ProvisionModel

struct DeleteCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "delete", abstract: "Delete a product; its deletionPolicy says whether the output stays.")

    @Argument(help: "product")
    var kind: String

    @Argument(help: "The product's name.")
    var name: String

    @OptionGroup var options: ClientOptions

    func validate() throws {
        guard kind == "product" else { throw ValidationError("only 'delete product NAME' is supported") }
    }

    func run() async throws {
        let reply = try await options.client.send(.DELETE, "/v1/products/\(name.urlComponentEncoded)")
        guard reply.status == 202 else {
            printError(reply.errorMessage)
            throw ExitCode(1)
        }
        print("product/\(name) deleted")
    }
}

struct PauseCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pause", abstract: "Stop a product's pipeline, keeping its output and checkpoint.")

    @Argument(help: "product")
    var kind: String

    @Argument(help: "The product's name.")
    var name: String

    @OptionGroup var options: ClientOptions

    func validate() throws {
        guard kind == "product" else { throw ValidationError("only 'pause product NAME' is supported") }
    }

    func run() async throws {
        try await PauseCommand.send("pause", name: name, client: options.client)
    }

    static func send(_ action: String, name: String, client: APIClient) async throws {
        let reply = try await client.send(.POST, "/v1/products/\(name.urlComponentEncoded)/\(action)")
        guard reply.status == 202 else {
            printError(reply.errorMessage)
            throw ExitCode(1)
        }
        print("product/\(name) \(action == "pause" ? "paused" : "resumed")")
    }
}

struct ResumeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "resume", abstract: "Restart a paused product from its checkpoint.")

    @Argument(help: "product")
    var kind: String

    @Argument(help: "The product's name.")
    var name: String

    @OptionGroup var options: ClientOptions

    func validate() throws {
        guard kind == "product" else { throw ValidationError("only 'resume product NAME' is supported") }
    }

    func run() async throws {
        try await PauseCommand.send("resume", name: name, client: options.client)
    }
}
