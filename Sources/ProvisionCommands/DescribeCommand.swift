import ArgumentParser
import Foundation
import ProvisionModel

struct DescribeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "describe", abstract: "Show a product's spec, status and conditions: what it is doing and why.")

    @OptionGroup var reference: ProductReference
    @OptionGroup var options: ClientOptions

    func run() async throws {
        let product = try await options.client.call(.GET, reference.path, as: ProductResource.self)
        print(Self.render(product), terminator: "")
    }

    static func render(_ product: ProductResource) -> String {
        let spec = product.spec, status = product.status
        var lines: [String] = []
        lines.append("Name:               \(product.metadata.name)")
        lines.append("Team:               \(product.metadata.team ?? "-")")
        lines.append("Generation:         \(product.metadata.generation) (observed \(status.observedGeneration))")
        lines.append("Created:            \(product.metadata.creationTimestamp)")
        lines.append("From:               \(spec.from)")
        switch spec.backfill {
        case .all: lines.append("Backfill:           all history")
        case .none: lines.append("Backfill:           none (new records only)")
        case .since(let text, _): lines.append("Backfill:           since \(text) (from \(status.backfillStart ?? "?"))")
        case .window(let from, let until):
            lines.append("Backfill:           from \(Timestamp.format(from))\(until.map { " until \(Timestamp.format($0))" } ?? "")")
        }
        lines.append("Where:              \(spec.filter ?? "-")")
        if let select = spec.select {
            lines.append("Select:")
            for field in select { lines.append("  \(field.name): \(field.expression)") }
        }
        lines.append("Key:                \(spec.key ?? "-")")
        lines.append("Output:             \(status.output ?? "-")")
        lines.append("Deletion policy:    \(spec.deletionPolicy.rawValue)")
        lines.append("Phase:              \(status.phase.rawValue)")
        lines.append("Lag:                \(status.lag) records")
        lines.append("Records written:    \(status.recordsWritten)")
        lines.append("Dead-lettered:      \(status.deadLettered)\(status.deadLettered > 0 ? " (provisionctl tail \(status.deadLetterTopic ?? "") --from-beginning)" : "")")
        if let late = status.lateRecords { lines.append("Late records:       \(late)") }
        lines.append("Checkpoint:         \(status.checkpoint.sorted { $0.key < $1.key }.map { "partition \($0.key) → offset \($0.value)" }.joined(separator: ", "))")
        lines.append("Conditions:")
        var rows = [["TYPE", "STATUS", "REASON", "SINCE", "MESSAGE"]]
        for condition in status.conditions {
            rows.append([condition.type, condition.status, condition.reason, condition.lastTransitionTime, condition.message])
        }
        lines.append(TextTable.render(rows).split(separator: "\n").map { "  " + $0 }.joined(separator: "\n"))
        return lines.joined(separator: "\n") + "\n"
    }
}
