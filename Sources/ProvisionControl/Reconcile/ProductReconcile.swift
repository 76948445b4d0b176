import ProvisionModel

/// One product's reconcile as a plain value: from what is desired (the stored product) and
/// what is observed (its pipeline, its reported status) to the steps that make them agree.
/// Level-triggered: it looks only at the two states, never at what changed, so running it
/// again after a crash or a missed event does the right thing.
public enum ProductReconcile {
    public struct Observed: Sendable, Equatable {
        /// The build the running pipeline writes, if one runs.
        public var runningBuild: Int?
        public var phase: ProductPhase?
        public var observedGeneration: Int?

        public init(runningBuild: Int? = nil, phase: ProductPhase? = nil, observedGeneration: Int? = nil) {
            self.runningBuild = runningBuild
            self.phase = phase
            self.observedGeneration = observedGeneration
        }
    }

    public enum Step: Sendable, Equatable {
        /// Stop the pipeline after its batch in flight.
        case stopPipeline
        /// Remove the output of the build before this one (a rebuild whose sink cannot
        /// build beside it, or a move to another output).
        case removePreviousOutput
        /// Apply the deletion policy to the output (and remove any previous one), then the
        /// dead-letter topic.
        case removeOutputs
        /// Delete the product's records: the deletion is complete.
        case forget
        /// Report the product paused.
        case reportPaused
        /// Report that the running build already serves the latest generation.
        case reportObservedGeneration
        /// Start a pipeline for the desired build.
        case startPipeline
    }

    /// What a reconcile came to, as the work queue takes it.
    public enum Outcome: Sendable, Equatable {
        /// Desired and observed agree (or a pipeline now works towards it).
        case done
        /// A step failed; try again after the queue's backoff.
        case retryWithBackoff(reason: String)
        /// Look again after this long.
        case requeue(after: Duration)
        /// No retry helps (the spec no longer compiles): reported, waiting for a person.
        case terminal(reason: String)
    }

    public static func steps(desired: StoredProduct?, observed: Observed) -> [Step] {
        let running = observed.runningBuild != nil
        guard let desired else { return running ? [.stopPipeline] : [] }
        if desired.deleting {
            return (running ? [.stopPipeline] : []) + [.removeOutputs, .forget]
        }
        if desired.paused {
            return (running ? [.stopPipeline] : []) + (observed.phase == .paused ? [] : [.reportPaused])
        }
        if observed.runningBuild == desired.build {
            return observed.observedGeneration == desired.generation ? [] : [.reportObservedGeneration]
        }
        return (running ? [.stopPipeline] : []) + (desired.pendingCleanup != nil ? [.removePreviousOutput] : []) + [.startPipeline]
    }
}
