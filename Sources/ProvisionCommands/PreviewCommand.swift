import ArgumentParser
import Foundation
import ProvisionModel

/// What a product would write, before it exists.
struct PreviewCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "preview",
        abstract: "Run a product spec over the latest records of its source and show what it would write; create nothing.")

    @Option(name: .shortAndLong, help: "Spec files holding one DataProduct (and any datasets it needs).")
    var file: [String]

    @Option(name: .long, help: "How many of the latest source records to run it over (at most 1000).")
    var sample = 100

    @Flag(name: .long, help: "Print the server's answer as JSON.")
    var json = false

    @OptionGroup var options: ClientOptions

    func run() async throws {
        let files = try SpecFiles.read(file)
        let body = try JSONSerialization.data(withJSONObject: ["files": files.map { ["name": $0.name, "content": $0.content] }])
        let reply = try await options.client.send(.POST, "/v1/preview?sample=\(sample)", body: body)
        guard reply.status == 200 else {
            printError(reply.errorMessage)
            throw ExitCode(1)
        }
        if json {
            print(String(decoding: reply.body, as: UTF8.self))
            return
        }
        guard case .object(let answer)? = try? JSONParser.parse([UInt8](reply.body)) else { throw ExitCode(1) }
        func text(_ value: JSONValue?) -> String {
            guard let value else { return "-" }
            if case .string(let string) = value { return string }
            var bytes: [UInt8] = []
            JSONWriter.write(value, into: &bytes)
            return String(decoding: bytes, as: UTF8.self)
        }
        print("product \(text(answer["product"])): \(text(answer["change"]?["action"]))")
        if case .array(let fields)? = answer["outputSchema"] {
            print("output schema: " + fields.map { "\(text($0["name"])) \(text($0["type"]))" }.joined(separator: ", "))
        }
        print("sampled \(text(answer["sampled"])) latest records: \(text(answer["passed"])) passed, \(text(answer["deadLettered"])) dead-lettered")
        let since = answer["backfill"]?["since"].flatMap { $0.isNull ? nil : text($0) } ?? "the start of the log"
        print("backfill: \(text(answer["backfill"]?["records"])) records (about \(text(answer["backfill"]?["bytesEstimate"])) bytes) since \(since)")
        if case .array(let rows)? = answer["rows"] {
            for row in rows { print(text(row)) }
        }
    }
}
