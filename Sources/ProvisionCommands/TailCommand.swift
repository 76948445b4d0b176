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

    @Option(name: .long, help: "Read only this partition (default: every partition).")
    var partition: Int?

    func run() async throws {
        let client = try options.client
        let pageSize = 1000
        var remaining = limit ?? (fromBeginning || follow ? Int.max : 10)
        let path = "/v1/topics/\(topic.urlComponentEncoded)/records"
        let first = try await client.recordsPage("\(path)?limit=1&from=-1&partition=\(partition ?? 0)")
        let partitions = partition.map { [$0] } ?? Array(0..<first.partitions)
        // Per partition, where to read next.
        var from: [Int: Int64] = [:]
        for number in partitions {
            let end = number == (partition ?? 0) ? first.endOffset
                : try await client.recordsPage("\(path)?limit=1&from=-1&partition=\(number)").endOffset
            from[number] = fromBeginning ? 0 : follow && limit == nil ? end : max(0, end - Int64(min(remaining, 10_000)))
        }
        if !follow && !fromBeginning && partitions.count > 1 {
            // The newest records over every partition: each partition's newest, merged.
            var newest: [RecordView] = []
            for number in partitions {
                newest += try await client.recordsPage("\(path)?partition=\(number)&from=\(from[number]!)&limit=\(min(10_000, remaining))").records
            }
            newest.sort(by: Self.inTimeOrder)
            for record in newest.suffix(remaining) { print(JSONWriter.string(record.json)) }
            return
        }
        var idleRounds = 0
        while remaining > 0 {
            // A round reads each partition once; the records of a round go out in time order,
            // so a key's records (one partition) keep theirs.
            var round: [RecordView] = []
            for number in partitions where remaining - round.count > 0 {
                // Long polling on one partition at a time, and only when a round found nothing.
                let wait = follow && idleRounds > 0 ? "&wait=\(max(100, 10_000 / partitions.count))" : ""
                let page = try await client.recordsPage(
                    "\(path)?partition=\(number)&from=\(from[number]!)&limit=\(min(pageSize, remaining - round.count))\(wait)")
                round += page.records
                from[number] = page.nextOffset
            }
            if partitions.count > 1 { round.sort(by: Self.inTimeOrder) }
            for record in round { print(JSONWriter.string(record.json)) }
            remaining -= round.count
            idleRounds = round.isEmpty ? idleRounds + 1 : 0
            if round.isEmpty && !follow { break }
        }
    }

    /// Records of several partitions in time order, a partition's in offset order. By the
    /// parsed time: the text drops a whole second's ".000", so as text 10:00:00.500 would
    /// come before 10:00:00.
    static func inTimeOrder(_ a: RecordView, _ b: RecordView) -> Bool {
        (Timestamp.parse(a.time) ?? .min, a.partition, a.offset) < (Timestamp.parse(b.time) ?? .min, b.partition, b.offset)
    }
}
