import Foundation
import ProvisionLog
import ProvisionModel
import ProvisionPipeline

/// What the API asks of the control plane.
extension Reconciler {
    /// Validates every file, computes the plan and, unless `dryRun`, applies all of it.
    /// Any error rejects the whole request: nothing is half-applied.
    public func apply(_ request: ApplyRequest, as caller: Caller) async throws -> ApplyResponse {
        try await applyPlanned(request, as: caller).response
    }

    /// `apply`, with the whole plan: what a git source reports beside the changes.
    func applyPlanned(_ request: ApplyRequest, as caller: Caller, writer: Writer? = nil) async throws
        -> (response: ApplyResponse, plan: ApplyPlan)
    {
        guard caller.role >= .editor else { throw AccessDenied.needsEditor(caller, to: "apply") }
        let preview = try plan(request, against: currentState, caller: caller, writer: writer)
        if request.dryRun {
            // For a person deciding: what each built product's backfill will read.
            var changes = preview.changes
            for index in changes.indices where changes[index].kind == .dataProduct && changes[index].rebuilds {
                guard let product = preview.next.products[changes[index].name]?.product,
                    let topic = preview.next.datasets[product.spec.from]?.dataset.spec.topic
                else { continue }
                changes[index].backfill = try await backfillEstimate(of: topic, since: product.spec.backfill.startTime(createdAt: currentTime))
            }
            var response = ApplyResponse(dryRun: true, changes: changes)
            response.warnings = preview.warnings.isEmpty ? nil : preview.warnings
            return (response, preview)
        }
        // Topics first: an empty topic is all that a rejected apply leaves behind.
        let created = Set(newTopics(preview).map(\.topic))
        for spec in newTopics(preview).sorted(by: { $0.topic < $1.topic }) {
            try await createTopic(for: spec)
        }
        var ((changes, applied), version) = try await commitVersioned { current in
            // Planned again against the state every earlier commit left: a change committed
            // while the topics were created is kept, not overwritten.
            let planned = try self.plan(request, against: current, caller: caller, writer: writer)
            guard Set(self.newTopics(planned).map(\.topic)).isSubset(of: created) else {
                throw ControlStateNotSaved(cause: "a dataset's topic changed while the apply ran; apply again")
            }
            let touched = planned.changes.filter { $0.action != .unchanged }
            var changes = planned.changes
            for index in changes.indices where changes[index].action == .unchanged {
                changes[index].resourceVersion = Self.version(of: changes[index], in: current)
            }
            return (planned.next, touched.filter { $0.kind == .dataset }.map(\.name),
                    touched.filter { $0.kind == .dataProduct }.map(\.name), (changes, planned))
        }
        for index in changes.indices where changes[index].action != .unchanged {
            changes[index].resourceVersion = version.map(String.init)
            if changes[index].kind == .dataProduct { requestReconcile(changes[index].name) }
        }
        var response = ApplyResponse(dryRun: false, changes: changes)
        response.warnings = applied.warnings.isEmpty ? nil : applied.warnings
        return (response, applied)
    }

    private static func version(of change: PlannedChange, in state: ControlState) -> String? {
        switch change.kind {
        case .dataset: return state.datasets[change.name].map { String($0.resourceVersion) }
        case .dataProduct: return state.products[change.name].map { String($0.resourceVersion) }
        case .gitSource: return state.gitSources[change.name].map { String($0.resourceVersion) }
        }
    }

    /// The specs of the datasets an apply creates, whose topics it creates.
    private nonisolated func newTopics(_ plan: ApplyPlan) -> [DatasetSpec] {
        plan.changes.filter { $0.kind == .dataset && $0.action == .create }.compactMap { change in
            plan.next.datasets[change.name]?.dataset.spec
        }
    }

    /// What an apply of `request` would change, validated and planned as the apply would,
    /// without the dry run's backfill estimates (they read the log): for a caller that only
    /// decides whether to apply, such as a git source.
    func plannedChanges(_ request: ApplyRequest, as caller: Caller, writer: Writer? = nil) throws -> ApplyPlan {
        guard caller.role >= .editor else { throw AccessDenied.needsEditor(caller, to: "apply") }
        return try plan(request, against: currentState, caller: caller, writer: writer)
    }

    /// The state an apply leads to and the changes that make it, against `state`.
    private func plan(_ request: ApplyRequest, against state: ControlState, caller: Caller, writer: Writer? = nil) throws -> ApplyPlan {
        try planWithDocuments(request, against: state, caller: caller, writer: writer).plan
    }

    /// `plan`, with the documents it planned (the caller's team filled in).
    /// - Parameter writer: who the change is recorded as, when not the caller's own (a git source).
    func planWithDocuments(_ request: ApplyRequest, against state: ControlState, caller: Caller, writer: Writer? = nil) throws
        -> (plan: ApplyPlan, documents: [SpecDocument])
    {
        let result = SpecLoader.load(request.files, catalog: state.datasets.values.map(\.dataset))
        guard result.errors.isEmpty else { throw ApplyRejected(errors: result.errors) }
        // A team's token applies for its team only, as `api:<team>`; an admin names any writer.
        let documents = try scoped(result, to: caller, against: state)
        let writer = writer ?? (caller.isAdmin ? Writer(request.managedBy ?? "cli") : Writer("api:\(caller.team)"))
        let plan = try planner.plan(current: state, documents: documents, writer: writer,
                                    prune: request.prune, force: request.force ?? false, now: currentTime)
        return (plan, documents)
    }

    /// The documents with the caller's team filled in where they name none; for a caller
    /// that is not an admin, a document naming another team refuses the whole apply. Every
    /// reference a product makes is checked: a team's spec reads only its own secrets (any
    /// other would send the server's credentials wherever the spec points), and each must exist.
    private func scoped(_ result: SpecLoadResult, to caller: Caller, against state: ControlState) throws -> [SpecDocument] {
        var forbidden: [SpecError] = []
        var missing: [SpecError] = []
        func error(_ location: SourceLocation, _ path: String, _ message: String) -> SpecError {
            SpecError(file: location.file, line: location.line, column: location.column, path: path, message: message)
        }
        func scope(_ metadata: inout ObjectMetadata, _ kind: String, at location: SourceLocation) {
            guard !caller.isAdmin else { return }
            guard let team = metadata.team else { return metadata.team = caller.team }
            if team != caller.team {
                forbidden.append(error(location, "metadata.team", "token '\(caller.token)' of team '\(caller.team)' cannot apply a \(kind) of team '\(team)'"))
            }
        }
        let environment = sinks.environment
        // Opened once per team, and only for a sink that connects somewhere.
        var secretsByTeam: [String: [String: String]] = [:]
        func secrets(of team: String?) -> [String: String] {
            guard let team else { return [:] }
            if let opened = secretsByTeam[team] { return opened }
            let opened = secretValues(of: team)
            secretsByTeam[team] = opened
            return opened
        }
        func checkReferences(_ references: [(path: String, reference: ValueReference)], of kind: String, team: String?,
                             inDocument index: Int)
        {
            for (path, reference) in references {
                let at = result.location(ofField: path, inDocument: index)
                switch reference {
                case .environment(let variable):
                    if !caller.isAdmin, !variable.hasPrefix(SecretReferences.teamPrefix(caller.team)) {
                        forbidden.append(error(at, path, "'\(reference)' is not one of team '\(caller.team)''s secrets; use '${secret:NAME}' (or an admin's \(SecretReferences.teamPrefix(caller.team))* variable)"))
                    } else if environment[variable]?.isEmpty ?? true {
                        missing.append(error(at, path, "'\(reference)' is not set on the server"))
                    }
                case .secret(let name):
                    if let team {
                        if state.secrets[StoredSecret.id(team: team, name: name)] == nil {
                            missing.append(error(at, path, "team '\(team)' has no secret '\(name)' (provisionctl secret set \(name) --team \(team))"))
                        }
                    } else {
                        missing.append(error(at, path, "'\(reference)' is a team's secret, and this \(kind) names no metadata.team"))
                    }
                }
            }
        }
        var scoped: [SpecDocument] = []
        for (index, document) in result.documents.enumerated() {
            switch document {
            case .dataset(var dataset, let location):
                scope(&dataset.metadata, "dataset", at: location)
                scoped.append(.dataset(dataset, location))
            case .dataProduct(var product, let location):
                scope(&product.metadata, "product", at: location)
                let team = product.metadata.team
                checkReferences(SecretReferences.find(in: product.spec).map { ("spec.\($0.path)", $0.reference) }, of: "product",
                                team: team, inDocument: index)
                if case .file = product.spec.sink {
                } else if let refusal = sinks.destinationRefusal(of: product.spec, secrets: secrets(of: team)) {
                    forbidden.append(error(result.location(ofField: refusal.path, inDocument: index), refusal.path, refusal.message))
                }
                scoped.append(.dataProduct(product, location))
            case .gitSource(var source, let location):
                scope(&source.metadata, "git source", at: location)
                checkReferences(source.spec.references.map { ("spec.\($0.path)", $0.reference) }, of: "git source",
                                team: source.metadata.team, inDocument: index)
                scoped.append(.gitSource(source, location))
            }
        }
        guard forbidden.isEmpty else { throw ApplyRejected(errors: forbidden, isForbidden: true) }
        guard missing.isEmpty else { throw ApplyRejected(errors: missing) }
        return scoped
    }

    /// Every change to a dataset, a product or a product's status committed after `version`
    /// (nil: from now on), in order. Throws `WatchExpired` when those changes are no longer
    /// all kept.
    public func watch(from version: ResourceVersion?, as caller: Caller) async throws -> AsyncThrowingStream<WatchEvent, Error> {
        let start: ResourceVersion
        if let version { start = version } else { start = try await store.snapshot().resourceVersion }
        let events = try await store.watch(from: start)
        // A team watches the catalog and its own products. A product's team is in its record;
        // its status and its deletion carry none, so the last team seen for each name is kept
        // (a name never seen with a team the caller owns is not shown).
        let teamsAtStart = currentState.products.mapValues { $0.product.metadata.team }
        return AsyncThrowingStream { continuation in
            let forward = Task {
                var teams = teamsAtStart
                do {
                    for try await event in events {
                        let kind: WatchEvent.Kind
                        switch event.key.kind {
                        case .dataset: kind = .dataset
                        case .product, .productStatus:
                            kind = event.key.kind == .product ? .dataProduct : .productStatus
                            if event.key.kind == .product, let value = event.value,
                                let stored = try? JSONDecoder().decode(StoredProduct.self, from: Data(value))
                            {
                                teams[event.key.name] = stored.product.metadata.team
                            }
                            guard caller.isAdmin || (teams[event.key.name] ?? nil).map({ caller.owns(team: $0) }) == true else { continue }
                        case .token, .secret, .gitSource: continue  // not the watchers' business
                        }
                        continuation.yield(WatchEvent(type: event.value == nil ? .deleted : .changed, kind: kind,
                                                      name: event.key.name, resourceVersion: String(event.resourceVersion)))
                    }
                    continuation.finish()
                } catch {
                    continuation.finish(throwing: error)
                }
            }
            continuation.onTermination = { _ in forward.cancel() }
        }
    }

    /// Per partition of every topic a product reads, the lowest offset some product has not
    /// read yet: retention by age keeps those records. A paused or stalled product holds its
    /// position; a product without a checkpoint yet, and every joined dataset (read from its
    /// beginning on each rebuild), hold the whole topic.
    public func unreadOffsets() async throws -> [TopicPartition: Int64] {
        var unread: [TopicPartition: Int64] = [:]
        func hold(_ partition: TopicPartition, from offset: Int64) {
            unread[partition] = min(unread[partition] ?? offset, offset)
        }
        let state = currentState
        var partitionCounts: [String: Int] = [:]
        for topic in Set(state.datasets.values.map(\.dataset.spec.topic)) {
            partitionCounts[topic] = try await eventLog.partitionCount(of: topic) ?? 0
        }
        func holdAll(_ topic: String) {
            for partition in 0..<(partitionCounts[topic] ?? 0) { hold(TopicPartition(topic: topic, partition: partition), from: 0) }
        }
        for stored in state.products.values where !stored.deleting {
            let spec = stored.product.spec
            if let topic = state.datasets[spec.from]?.dataset.spec.topic {
                if stored.status.checkpoint.isEmpty { holdAll(topic) }
                for (partition, offset) in stored.status.checkpoint {
                    hold(TopicPartition(topic: topic, partition: Int(partition) ?? 0), from: offset)
                }
            }
            for join in spec.joins {
                if let topic = state.datasets[join.dataset]?.dataset.spec.topic { holdAll(topic) }
            }
        }
        return unread
    }

    /// The spec of the dataset kept in `topic`, if there is one.
    public func datasetSpec(onTopic topic: String) -> DatasetSpec? {
        currentState.datasets.values.first { $0.dataset.spec.topic == topic }?.dataset.spec
    }

    /// One page of the caller's products, and the token of the next.
    public func listProducts(as caller: Caller, limit: Int?, after token: String?)
        -> (products: [ProductResource], next: String?, resourceVersion: ResourceVersion)
    {
        let visible = currentState.products.values.filter { caller.owns(team: $0.product.metadata.team) }
            .sorted { $0.product.name < $1.product.name }
        let page = ListPage.slice(visible, name: \.product.name, limit: limit, after: token)
        return (page.items.map(resource), page.next, committedVersion)
    }

    /// The products the caller's team owns (every product for an admin).
    public func products(as caller: Caller) -> [ProductResource] {
        currentState.products.values.filter { caller.owns(team: $0.product.metadata.team) }
            .sorted { $0.product.name < $1.product.name }.map(resource)
    }

    /// The product, if it exists and the caller's team owns it: another team's is not found.
    public func product(_ name: String, as caller: Caller) -> ProductResource? {
        visibleProduct(name, to: caller).map(resource)
    }

    func visibleProduct(_ name: String, to caller: Caller) -> StoredProduct? {
        currentState.products[name].flatMap { caller.owns(team: $0.product.metadata.team) ? $0 : nil }
    }

    /// Nil when the product is not the caller's to see; throws when it may see but not change it.
    private func changeable(_ name: String, by caller: Caller, to action: String) throws -> StoredProduct? {
        guard let stored = visibleProduct(name, to: caller) else { return nil }
        guard caller.role >= .editor else { throw AccessDenied.needsEditor(caller, to: action) }
        return stored
    }

    /// Marks the product for deletion and returns at once; the reconciler stops it and
    /// applies its deletion policy. Returns the product's version after the change, or nil
    /// if it does not exist.
    /// A product a git source manages is removed from git, not deleted here: the next sync
    /// would build it again from scratch.
    public func deleteProduct(_ name: String, as caller: Caller) async throws -> ResourceVersion? {
        guard let stored = try changeable(name, by: caller, to: "delete") else { return nil }
        if let source = managingGitSource(of: stored) {
            throw ApplyRejected(errors: [SpecError(file: "-", line: 1, column: 1, path: "metadata.name",
                                                   message: "product '\(name)' is managed by git source '\(source)': remove it from the repository to delete it")],
                                isConflict: true)
        }
        return try await changeProduct(name) { $0.deleting = true }
    }

    /// Stops or restarts a product's pipeline, keeping its output and checkpoint. Returns
    /// the product's version after the change, or nil if it does not exist.
    public func setPaused(_ name: String, _ paused: Bool, as caller: Caller) async throws -> ResourceVersion? {
        guard try changeable(name, by: caller, to: paused ? "pause" : "resume") != nil else { return nil }
        return try await changeProduct(name) { $0.paused = paused }
    }

    /// Resumes a product and, with `acceptingLoss`, lets its next run move past records
    /// retention removed before it read them. Returns the product's version after the
    /// change, or nil if it does not exist.
    public func resume(_ name: String, acceptingLoss: Bool, as caller: Caller) async throws -> ResourceVersion? {
        guard try changeable(name, by: caller, to: "resume") != nil else { return nil }
        let version = try await changeProduct(name) { stored in
            stored.paused = false
            if acceptingLoss { stored.acceptsLoss = true }
        }
        // A product stopped by the loss has no pipeline to wake: start it again.
        if version != nil, acceptingLoss { await restartRun(name) }
        return version
    }

    /// Commits a change to a product that is not being deleted and asks for its
    /// reconciliation. Returns the product's version after it (nil: no such product).
    private func changeProduct(_ name: String, _ change: @escaping (inout StoredProduct) -> Void) async throws -> ResourceVersion? {
        let (found, version) = try await commitVersioned { current -> (ControlState, [String], [String], ResourceVersion?) in
            guard var stored = current.products[name], !stored.deleting else { return (current, [], [], nil) }
            change(&stored)
            var next = current
            next.products[name] = stored
            return (next, [], [name], stored.resourceVersion)
        }
        guard let found else { return nil }
        requestReconcile(name)
        return version ?? found  // no version: the change changed nothing
    }

    /// The catalog (everyone's), matching `query` (see `CatalogSearch`), one page of it.
    /// - Parameter withRecordStats: also each one's time span and recent rate (`?stats=true`).
    public func datasets(withRecordStats: Bool = false, matching query: String? = nil, limit: Int? = nil, after token: String? = nil)
        async throws -> (datasets: [DatasetResource], next: String?)
    {
        let matching = currentState.datasets.values.filter { stored in query.map { CatalogSearch.matches(stored.dataset, query: $0) } ?? true }
            .sorted { $0.dataset.name < $1.dataset.name }
        let page = ListPage.slice(matching, name: \.dataset.name, limit: limit, after: token)
        var result: [DatasetResource] = []
        for stored in page.items {
            var resource = try await datasetResource(stored)
            if withRecordStats { try await describeRecords(of: stored.dataset, in: &resource, sample: 0, masked: true) }
            result.append(resource)
        }
        return (result, page.next)
    }

    public func datasets() async throws -> [DatasetResource] {
        try await datasets(limit: ListPage.maximumLimit).datasets
    }

    /// How records of `topic` are masked for the caller: the schema of the dataset they are
    /// records of (a product's dead letters are its source's), when it marks personal data
    /// and the caller's team does not own it; nil when nothing is to be masked.
    public func personalDataMask(forTopic topic: String, as caller: Caller) -> (schema: Schema, maskingKey: Bool)? {
        let state = currentState
        let dataset: Dataset?
        if let product = TopicName.product(ofDeadLetters: topic) {
            dataset = state.products[product].flatMap { state.datasets[$0.product.spec.from]?.dataset }
        } else {
            dataset = state.datasets.values.first { $0.dataset.spec.topic == topic }?.dataset
        }
        guard let dataset, dataset.spec.schema.containsPII, !caller.owns(team: dataset.metadata.team) else { return nil }
        let keyIsPII = dataset.spec.key.flatMap { dataset.spec.schema.field(named: $0) }?.pii == true
        return (dataset.spec.schema, keyIsPII)
    }

    /// The most records a dataset's sample shows.
    public static let datasetSampleMax = 100

    /// The dataset with its lineage — which of the caller's products read it, and where they
    /// write (other teams' products are only counted) — the time span and recent rate of its
    /// records, and a sample of the latest `sample` of them, personal data masked unless the
    /// caller's team owns it.
    public func dataset(_ name: String, sample: Int = 5, as caller: Caller) async throws -> DatasetResource? {
        guard let stored = currentState.datasets[name] else { return nil }
        var resource = try await datasetResource(stored)
        try await describeRecords(of: stored.dataset, in: &resource, sample: min(max(sample, 0), Self.datasetSampleMax),
                                  masked: !caller.owns(team: stored.dataset.metadata.team))
        var readers: [DatasetLineage.Reader] = []
        var others = 0
        for product in currentState.products.values.sorted(by: { $0.product.name < $1.product.name }) where !product.deleting {
            let spec = product.product.spec
            let reads = spec.from == name ? "from" : spec.joins.contains { $0.dataset == name } ? "join" : nil
            guard let reads else { continue }
            guard caller.owns(team: product.product.metadata.team) else {
                others += 1
                continue
            }
            readers.append(DatasetLineage.Reader(product: product.product.name, team: product.product.metadata.team, reads: reads,
                                                 output: product.status.output, managedBy: product.manager.rawValue))
        }
        resource.lineage = DatasetLineage(products: readers, otherTeams: others)
        return resource
    }

    private func describeRecords(of dataset: Dataset, in resource: inout DatasetResource, sample: Int, masked: Bool) async throws {
        let topic = dataset.spec.topic
        let now = currentTime
        var oldest: TimestampMilliseconds?, newest: TimestampMilliseconds?
        var recent: Int64 = 0
        var latest: [StoredRecord] = []
        for partition in 0..<(try await eventLog.partitionCount(of: topic) ?? 0) {
            let source = TopicPartition(topic: topic, partition: partition)
            let start = try await eventLog.startOffset(of: source), end = try await eventLog.endOffset(of: source)
            guard start < end else { continue }
            let first = try await eventLog.readBatch(source, from: start, maxRecords: 1, maxBytes: 1 << 20)
            if first.count > 0 { oldest = min(oldest ?? .max, first.record(at: 0).record.timestamp) }
            let tailStart = max(start, end - Int64(max(sample, 1)))
            let tail = try await eventLog.readBatch(source, from: tailStart, maxRecords: Int(end - tailStart), maxBytes: 4 << 20)
            for index in 0..<tail.count { latest.append(tail.record(at: index)) }
            if tail.count > 0 { newest = max(newest ?? .min, tail.record(at: tail.count - 1).record.timestamp) }
            recent += end - max(start, try await eventLog.offset(forTimestamp: now - 300_000, in: source))
        }
        resource.status.oldestRecordTime = oldest.map(Timestamp.format)
        resource.status.newestRecordTime = newest.map(Timestamp.format)
        resource.status.recentRecordsPerSecond = (Double(recent) / 300 * 1000).rounded() / 1000
        guard sample > 0 else { return }
        let schema = dataset.spec.schema
        resource.sample = latest.sorted { ($0.record.timestamp, $0.offset) < ($1.record.timestamp, $1.offset) }.suffix(sample)
            .compactMap { record in
                guard let value = record.record.value, let parsed = try? JSONParser.parse(value) else { return nil }
                return masked ? schema.masking(parsed) : parsed
            }
    }

    private func datasetResource(_ stored: StoredDataset) async throws -> DatasetResource {
        let topic = stored.dataset.spec.topic
        var start: Int64 = 0, end: Int64 = 0
        for partition in 0..<(try await eventLog.partitionCount(of: topic) ?? 0) {
            let source = TopicPartition(topic: topic, partition: partition)
            start += try await eventLog.startOffset(of: source)
            end += try await eventLog.endOffset(of: source)
        }
        return DatasetResource(
            metadata: ResourceMetadata(stored.dataset.metadata, generation: stored.generation,
                                       creationTimestamp: Timestamp.format(stored.createdAt), managedBy: stored.manager.rawValue,
                                       resourceVersion: String(stored.resourceVersion)),
            spec: stored.dataset.spec, status: DatasetStatus(records: end - start, startOffset: start, endOffset: end))
    }

    private func resource(_ stored: StoredProduct) -> ProductResource {
        var metadata = ResourceMetadata(stored.product.metadata, generation: stored.generation,
                                        creationTimestamp: Timestamp.format(stored.createdAt), managedBy: stored.manager.rawValue,
                                        resourceVersion: String(stored.resourceVersion))
        metadata.deleting = stored.deleting ? true : nil
        return ProductResource(metadata: metadata, spec: stored.product.spec, status: stored.status)
    }
}
