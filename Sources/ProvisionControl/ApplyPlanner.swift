import ProvisionModel
import ProvisionPipeline

/// Who makes a change, as recorded on every object it creates (`managedBy`): `cli`,
/// `api:<team>`, `gitops:<source>`. A writer changes and prunes only what it manages.
public struct Writer: Sendable, Hashable, Codable, CustomStringConvertible {
    public var rawValue: String

    public init(_ rawValue: String) {
        self.rawValue = rawValue
    }

    public static let cli = Writer("cli")

    public var description: String { rawValue }

    public init(from decoder: Decoder) throws {
        rawValue = try decoder.singleValueContainer().decode(String.self)
    }

    public func encode(to encoder: Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(rawValue)
    }
}

/// What the planner must know about outputs, as pure functions of a spec (the sink
/// factory's rules, without its I/O).
public struct OutputRules: Sendable {
    /// Where a spec's output is, comparable between specs (no secrets).
    public var location: @Sendable (DataProductSpec) -> String
    /// Whether the sink can build a new output beside the served one (a table, an index).
    public var rebuildsInPlace: @Sendable (DataProductSpec) -> Bool

    public init(location: @escaping @Sendable (DataProductSpec) -> String,
                rebuildsInPlace: @escaping @Sendable (DataProductSpec) -> Bool)
    {
        self.location = location
        self.rebuildsInPlace = rebuildsInPlace
    }
}

/// The state an apply leads to, and the changes that make it.
public struct ApplyPlan: Sendable {
    public var next: ControlState
    public var changes: [PlannedChange]
}

/// Plans an apply: `(current state, submitted documents, writer) → changes`, with no I/O,
/// so that it is tested without a server and the reconciler only executes what it returns.
public struct ApplyPlanner: Sendable {
    public var rules: OutputRules

    public init(rules: OutputRules) {
        self.rules = rules
    }

    /// - Parameters:
    ///   - documents: validated documents (`SpecLoader` found no error in them).
    ///   - prune: products the writer manages and the documents omit are deleted; no other.
    ///   - force: the writer takes over objects another writer manages instead of being refused.
    public func plan(current: ControlState, documents: [SpecDocument], writer: Writer, prune: Bool = false,
                     force: Bool = false, now: TimestampMilliseconds) throws(ApplyRejected) -> ApplyPlan
    {
        var errors = outputConflicts(documents, in: current)
        var ownershipConflicts = 0  // ownership and version conflicts: a 409, not a 422
        var next = current
        var changes: [PlannedChange] = []
        var appliedProducts: Set<String> = []
        for document in documents {
            switch document {
            case .dataset(var dataset, let location):
                let expected = dataset.metadata.resourceVersion
                dataset.metadata.resourceVersion = nil
                if let refusal = versionConflict(kind: "dataset", name: dataset.name, expected: expected,
                                                 found: next.datasets[dataset.name]?.resourceVersion, location: location)
                {
                    errors.append(refusal)
                    ownershipConflicts += 1
                    continue
                }
                guard let existing = next.datasets[dataset.name] else {
                    next.datasets[dataset.name] = StoredDataset(dataset: dataset, generation: 1, createdAt: now, managedBy: writer)
                    changes.append(PlannedChange(kind: .dataset, name: dataset.name, action: .create))
                    continue
                }
                if existing.dataset == dataset {
                    changes.append(PlannedChange(kind: .dataset, name: dataset.name, action: .unchanged))
                    continue
                }
                if let refusal = ownershipConflict(kind: "dataset", name: dataset.name, managedBy: existing.manager, writer: writer,
                                                   force: force, location: location)
                {
                    errors.append(refusal)
                    ownershipConflicts += 1
                    continue
                }
                next.datasets[dataset.name]?.dataset = dataset
                next.datasets[dataset.name]?.generation += 1
                next.datasets[dataset.name]?.managedBy = writer
                changes.append(PlannedChange(kind: .dataset, name: dataset.name, action: .update,
                                             fields: FieldDiff.changes(from: existing.dataset, to: dataset)))
            case .dataProduct(var product, let location):
                appliedProducts.insert(product.name)
                let expected = product.metadata.resourceVersion
                product.metadata.resourceVersion = nil
                let live = next.products[product.name].flatMap { $0.deleting ? nil : $0 }
                if let refusal = versionConflict(kind: "product", name: product.name, expected: expected,
                                                 found: live?.resourceVersion, location: location)
                {
                    errors.append(refusal)
                    ownershipConflicts += 1
                    continue
                }
                if var existing = live {
                    if existing.product == product {
                        changes.append(PlannedChange(kind: .dataProduct, name: product.name, action: .unchanged))
                        continue
                    }
                    if let refusal = ownershipConflict(kind: "product", name: product.name, managedBy: existing.manager,
                                                       writer: writer, force: force, location: location)
                    {
                        errors.append(refusal)
                        ownershipConflicts += 1
                        continue
                    }
                    let change = existing.product.spec.outputChange(to: product.spec)
                    let rebuild = change != .none
                    let fields = FieldDiff.changes(from: existing.product, to: product)
                    if rebuild { beginBuild(of: &existing, as: product.spec, change: change, now: now) }
                    existing.product = product
                    existing.generation += 1
                    existing.managedBy = writer
                    next.products[product.name] = existing
                    changes.append(PlannedChange(kind: .dataProduct, name: product.name, action: rebuild ? .updateRebuild : .update,
                                                 detail: rebuild ? Self.rebuildDetail(existing) : nil, fields: fields))
                } else {
                    // A product whose deletion has not finished is created anew: a later build
                    // number retires the old one's pipeline, and its output is cleaned up first.
                    let deleted = next.products[product.name]
                    var created = StoredProduct(product: product, generation: 1, createdAt: now, build: (deleted?.build ?? 0) + 1,
                                                buildStartedAt: now, status: ProductStatus(), deleting: false, paused: false,
                                                pendingCleanup: deleted.map { $0.pendingCleanup ?? $0.product.spec })
                    created.managedBy = writer
                    next.products[product.name] = created
                    changes.append(PlannedChange(kind: .dataProduct, name: product.name, action: .create))
                }
            }
        }
        errors += rebuildProductsOfChangedDatasets(from: current, in: &next, changes: &changes, documents: documents, now: now)
        if prune {
            // Only what this writer manages: another team's or source's products are not its to delete.
            for name in next.products.keys.sorted() where !appliedProducts.contains(name) {
                guard let stored = next.products[name], !stored.deleting, stored.manager == writer else { continue }
                next.products[name]?.deleting = true
                changes.append(PlannedChange(kind: .dataProduct, name: name, action: .delete))
            }
        }
        guard errors.isEmpty else {
            throw ApplyRejected(errors: errors.sorted { ($0.file, $0.line, $0.column) < ($1.file, $1.line, $1.column) },
                                isConflict: ownershipConflicts == errors.count)
        }
        return ApplyPlan(next: next, changes: changes)
    }

    /// A document that names the version it was read at changes the object only if it is
    /// still at that version (Kubernetes' optimistic concurrency).
    private func versionConflict(kind: String, name: String, expected: String?, found: ResourceVersion?,
                                 location: SourceLocation) -> SpecError?
    {
        guard let expected, expected != found.map(String.init) else { return nil }
        let message = found.map { "\(kind) '\(name)' was changed since resourceVersion \(expected) (it is at \($0) now); read it again and reapply" }
            ?? "\(kind) '\(name)' does not exist, so it is not at resourceVersion \(expected)"
        return SpecError(file: location.file, line: location.line, column: location.column, path: "metadata.resourceVersion",
                         message: message)
    }

    private func ownershipConflict(kind: String, name: String, managedBy: Writer, writer: Writer, force: Bool,
                                   location: SourceLocation) -> SpecError?
    {
        guard managedBy != writer, !force else { return nil }
        return SpecError(file: location.file, line: location.line, column: location.column, path: "metadata.name",
                         message: "\(kind) '\(name)' is managed by \(managedBy), not \(writer); apply with --force to take it over")
    }

    /// A dataset whose records change shape (topic, key, time or schema) changes what its
    /// products read: every product on it must still compile against the new version (or the
    /// apply is rejected at the dataset), and its output is rebuilt. Its description, owner or
    /// `pii` marks change nothing a product writes.
    private func rebuildProductsOfChangedDatasets(from current: ControlState, in next: inout ControlState,
                                                  changes: inout [PlannedChange], documents: [SpecDocument],
                                                  now: TimestampMilliseconds) -> [SpecError]
    {
        var locations: [String: SourceLocation] = [:]
        for case .dataset(let dataset, let location) in documents { locations[dataset.name] = location }
        let changed = Set(changes.filter { change in
            change.kind == .dataset && change.action == .update
                && current.datasets[change.name]?.dataset.spec.recordShape != next.datasets[change.name]?.dataset.spec.recordShape
        }.map(\.name))
        guard !changed.isEmpty else { return [] }
        let datasets = next.datasets.mapValues(\.dataset)
        var errors: [SpecError] = []
        for name in next.products.keys.sorted() {
            guard var stored = next.products[name], !stored.deleting, changed.contains(stored.product.spec.from) else { continue }
            let dataset = stored.product.spec.from
            do {
                _ = try ProductPlan.compile(stored.product, datasets: datasets)
            } catch {
                let location = locations[dataset] ?? SourceLocation(file: "?", line: 1, column: 1)
                errors.append(SpecError(file: location.file, line: location.line, column: location.column, path: "spec",
                                        message: "this change to dataset '\(dataset)' breaks product '\(name)': \(error.summary)"))
                continue
            }
            let index = changes.firstIndex { $0.kind == .dataProduct && $0.name == name }
            if let index, [.create, .updateRebuild].contains(changes[index].action) { continue }
            beginBuild(of: &stored, as: stored.product.spec, change: .rebuild, now: now)
            next.products[name] = stored
            let change = PlannedChange(kind: .dataProduct, name: name, action: .updateRebuild,
                                       detail: "dataset '\(dataset)' changed; the output is rebuilt from the start of the backfill")
            if let index { changes[index] = change } else { changes.append(change) }
        }
        return errors
    }

    /// Starts a new build of a product's output. Sinks that can build beside the current
    /// output (or extend it) keep it serving until the new build has caught up; others
    /// remove it first.
    private func beginBuild(of stored: inout StoredProduct, as spec: DataProductSpec, change: OutputChange,
                            now: TimestampMilliseconds)
    {
        let sameOutput = rules.location(stored.product.spec) == rules.location(spec)
        if sameOutput, rules.rebuildsInPlace(spec), stored.pendingCleanup == nil {
            stored.buildKind = change == .addsFields ? .widening : .replacement
        } else {
            stored.pendingCleanup = stored.pendingCleanup ?? stored.product.spec
            stored.buildKind = .fresh
        }
        // An extension refills the rows already there, so its window must not move.
        if stored.buildKind != .widening { stored.buildStartedAt = now }
        stored.build += 1
        stored.status = ProductStatus(observedGeneration: stored.status.observedGeneration)
    }

    static func rebuildDetail(_ stored: StoredProduct) -> String {
        switch stored.buildKind ?? .fresh {
        case .fresh: return "the output changes; it is rebuilt from the start of the backfill"
        case .replacement: return "the output changes; a new one is built beside it from the start of the backfill and swapped in when it has caught up"
        case .widening: return "the output gains fields; they are added and filled from the start of the backfill"
        }
    }

    /// Two products writing one output would corrupt each other: each output belongs to one
    /// product, whether it is in this apply or exists already.
    private func outputConflicts(_ documents: [SpecDocument], in current: ControlState) -> [SpecError] {
        var owners: [String: String] = [:]
        for stored in current.products.values where !stored.deleting {
            owners[rules.location(stored.product.spec)] = stored.product.name
        }
        var errors: [SpecError] = []
        var claimed: [String: String] = [:]
        for case .dataProduct(let product, let location) in documents {
            let output = rules.location(product.spec)
            let owner = claimed[output] ?? owners[output]
            if let owner, owner != product.name {
                errors.append(SpecError(file: location.file, line: location.line, column: location.column,
                                        path: "spec.sink", message: "\(output) is already the output of product '\(owner)'"))
            }
            claimed[output] = product.name
        }
        return errors
    }
}
