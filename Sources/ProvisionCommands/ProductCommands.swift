import Foundation
import ArgumentParser
import NIOHTTP1
import ProvisionModel

/// `product NAME`, the way the product commands name their object.
struct ProductReference: ParsableArguments {
    @Argument(help: "product")
    var kind: String

    @Argument(help: "The product's name.")
    var name: String

    func validate() throws {
        guard kind == "product" else { throw ValidationError("expected 'product NAME', found '\(kind)'") }
    }

    var path: String { "/v1/products/\(name.urlComponentEncoded)" }
}

/// Sends a request about one product that the server accepts with 202, and prints the result.
private func sendProductAction(_ method: HTTPMethod, _ path: String, done: String, client: APIClient) async throws {
    let reply = try await client.send(method, path)
    guard reply.status == 202 else {
        printError(reply.errorMessage)
        throw ExitCode(1)
    }
    print(done)
}

struct DeleteCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "delete", abstract: "Delete a product; its deletionPolicy says whether the output stays.")

    @OptionGroup var product: ProductReference
    @OptionGroup var options: ClientOptions

    func run() async throws {
        try await sendProductAction(.DELETE, product.path, done: "product/\(product.name) deleted", client: options.client)
    }
}

struct PauseCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pause", abstract: "Stop a product's pipeline, keeping its output and checkpoint.")

    @OptionGroup var product: ProductReference
    @OptionGroup var options: ClientOptions

    func run() async throws {
        try await sendProductAction(.POST, product.path + "/pause", done: "product/\(product.name) paused", client: options.client)
    }
}

struct ResumeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "resume",
        abstract: "Restart a paused product from its checkpoint, or one stopped by records lost to retention.")

    @OptionGroup var product: ProductReference

    @Flag(name: .long, help: "Continue past records that retention removed before the product read them.")
    var acceptLoss = false
    @OptionGroup var options: ClientOptions

    func run() async throws {
        try await sendProductAction(.POST, product.path + "/resume" + (acceptLoss ? "?acceptLoss=true" : ""),
                                    done: "product/\(product.name) resumed\(acceptLoss ? ", accepting records lost to retention" : "")",
                                    client: options.client)
    }
}

struct RedeliverCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "redeliver",
        abstract: "Send a webhook product's dead-lettered records to its endpoint again (those since the last redelivery).")

    @Argument(help: "The product.")
    var product: String

    @OptionGroup var options: ClientOptions

    func run() async throws {
        let reply = try await options.client.send(.POST, "/v1/products/\(product.urlComponentEncoded)/redeliver")
        guard reply.status == 200 else {
            printError(reply.errorMessage)
            throw ExitCode(1)
        }
        let result = try JSONDecoder().decode(RedeliveryResult.self, from: reply.body)
        print("\(result.redelivered) redelivered, \(result.deadLetteredAgain) dead-lettered again")
    }
}
