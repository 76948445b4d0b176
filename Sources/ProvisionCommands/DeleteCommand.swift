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
