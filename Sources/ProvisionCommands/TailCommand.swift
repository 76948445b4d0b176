import ArgumentParser
import Foundation
import ProvisionModel

struct TailCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tail", abstract: "Print a topic's records as JSON lines.")

    @Argument(help: "The topic to read.")
    var topic: String

    @Flag(name: .long, help: "Start at the oldest retained record instead of the newest ones.")
    var fromBeginning = false

    @Option(name: .long, help: "Print at most this many records (default: 10, or all with --from-beginning).")
    var limit: Int?

    @Flag(name: [.short, .long], help: "Keep printing records as they arrive.")
    var follow = false

    @OptionGroup var options: ClientOptions

    func run() async throws {
        let client = try options.client
        let pageSize = 1000
        var remaining = limit ?? (fromBeginning || follow ? Int.max : 10)
        var from: Int64
        if fromBeginning {
            from = 0
        } else {
            let page = try await client.recordsPage("/v1/topics/\(topic.urlComponentEncoded)/records?limit=1&from=-1")
            from = follow && limit == nil ? page.endOffset : max(0, page.endOffset - Int64(min(remaining, 10_000)))
        }
        while remaining > 0 {
            let wait = follow ? "&wait=10000" : ""
            let page = try await client.recordsPage(
                "/v1/topics/\(topic.urlComponentEncoded)/records?from=\(from)&limit=\(min(pageSize, remaining))\(wait)")
            for record in page.records { print(JSONWriter.string(record.json)) }
            remaining -= page.records.count
            from = page.nextOffset
            if page.records.isEmpty && !follow { break }
        }
    }
}
