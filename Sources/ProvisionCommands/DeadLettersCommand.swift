import ArgumentParser
import Foundation
import ProvisionModel

struct DeadLettersCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "deadletters",
        abstract: "Show a product's dead-lettered records with the reason each was set aside.")

    @Argument(help: "The product.")
    var product: String

    @Option(name: .long, help: "Show at most this many, the newest (default: 20).")
    var limit: Int = 20

    @Flag(name: .long, help: "Print each as a JSON line with its value and headers.")
    var json = false

    @OptionGroup var options: ClientOptions

    func run() async throws {
        let client = try options.client
        // The product must exist; its dead-letter topic may not yet.
        _ = try await client.call(.GET, "/v1/products/\(product.urlComponentEncoded)", as: ProductResource.self)
        let topic = "_deadletter.\(product)".urlComponentEncoded
        let end: RecordsPage
        do {
            end = try await client.recordsPage("/v1/topics/\(topic)/records?limit=1&from=-1")
        } catch {
            print("no dead letters")
            return
        }
        var from = max(0, end.endOffset - Int64(max(0, limit)))
        var records: [RecordView] = []
        while from < end.endOffset {
            let page = try await client.recordsPage("/v1/topics/\(topic)/records?from=\(from)&limit=1000")
            records += page.records
            if page.records.isEmpty { break }
            from = page.nextOffset
        }
        guard !records.isEmpty else {
            print("no dead letters")
            return
        }
        if json {
            for record in records { print(JSONWriter.string(record.json)) }
            return
        }
        print(["OFFSET", "TIME", "KEY", "SOURCE", "REASON"].joined(separator: "\t"))
        for record in records {
            let headers = record.headers ?? [:]
            let source = "\(headers["provision.source.topic"] ?? "?")/\(headers["provision.source.partition"] ?? "?")@\(headers["provision.source.offset"] ?? "?")"
            print([String(record.offset), record.time, record.key ?? "-", source, headers["provision.reason"] ?? "-"].joined(separator: "\t"))
        }
        print("\(records.count) of \(end.endOffset) dead letters")
    }
}
