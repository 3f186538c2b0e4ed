using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Time.Testing;
using PciPassthrough.Devices;
using PciPassthrough.Registry;
using PciPassthrough.Simulation.Tests;
using PciPassthrough.Storage;
using PciPassthrough.Tests.TestDoubles;

namespace PciPassthrough.Journal.Tests;

public sealed class OperationJournalTests : IDisposable
{
    private readonly TempDirectory _dir = new("pcipt-journal");
    private readonly StateDirectory _state;
    private readonly FakeTimeProvider _time = new(new DateTimeOffset(2026, 1, 2, 3, 4, 5, TimeSpan.Zero));

    public OperationJournalTests()
    {
        _state = new StateDirectory(_dir.Path);
        _state.EnsureCreated();
    }

    public void Dispose() => _dir.Dispose();

    private OperationJournal CreateJournal(ICrashPoint? crashPoint = null) =>
        new(_state, crashPoint ?? new NoCrashPoint(), _time, NullLogger<OperationJournal>.Instance);

    private JournalEntry NewEntry(string operation = "bind", DateTime? startedAt = null) => new()
    {
        OperationId = Cuid2Generator.Shared.Next(),
        Operation = operation,
        DeviceId = Cuid2Generator.Shared.Next(),
        PciAddress = PciAddress.Parse("0000:3b:00.0"),
        Functions = [new BoundFunction { PciAddress = PciAddress.Parse("0000:3b:00.0"), OriginalDriver = "nvme" }],
        StartedAt = startedAt ?? _time.GetUtcNow().UtcDateTime,
    };

    [Fact]
    public void Begin_Entry_IsOnDiskBeforeItReturns()
    {
        var journal = CreateJournal();

        var entry = journal.Begin(NewEntry());

        var pending = Assert.Single(CreateJournal().Pending());
        Assert.Equal(entry.OperationId, pending.OperationId);
        Assert.Equal(0, pending.Step);
        Assert.Null(pending.StepDescription);
        Assert.Equal("nvme", Assert.Single(pending.Functions).OriginalDriver);
    }

    [Fact]
    public void Step_IntentIsOnDiskWhenTheCrashPointIsReached()
    {
        var recorder = new RecordingCrashPoint();
        var journal = CreateJournal(recorder);
        recorder.Journal = journal;
        var entry = journal.Begin(NewEntry());

        entry = journal.Step(entry, "set driver_override of 0000:3b:00.0 to vfio-pci");
        journal.Step(entry, "unbind 0000:3b:00.0 from nvme");

        Assert.Equal(
            [(1, "set driver_override of 0000:3b:00.0 to vfio-pci"), (2, "unbind 0000:3b:00.0 from nvme")],
            recorder.ReachedSteps.Select(s => (s.Step, s.Description)));
        Assert.Equal(2, Assert.Single(journal.Pending()).Step);
    }

    [Fact]
    public void Complete_Entry_IsGone()
    {
        var journal = CreateJournal();
        var entry = journal.Step(journal.Begin(NewEntry()), "probe");

        journal.Complete(entry);

        Assert.Empty(journal.Pending());
        Assert.Empty(Directory.EnumerateFileSystemEntries(_state.Journal));
    }

    [Fact]
    public void Pending_SeveralOperations_OldestFirst()
    {
        var journal = CreateJournal();
        var later = journal.Begin(NewEntry("unbind", new DateTime(2026, 1, 2, 10, 0, 0, DateTimeKind.Utc)));
        var earlier = journal.Begin(NewEntry("bind", new DateTime(2026, 1, 2, 9, 0, 0, DateTimeKind.Utc)));

        Assert.Equal([earlier.OperationId, later.OperationId], journal.Pending().Select(e => e.OperationId));
    }

    [Fact]
    public void Pending_UnreadableEntry_IsMovedToQuarantineAndSkipped()
    {
        var journal = CreateJournal();
        var good = journal.Begin(NewEntry());
        var bad = Path.Combine(_state.Journal, Cuid2Generator.Shared.Next() + ".json");
        File.WriteAllText(bad, "{ torn");

        var pending = journal.Pending();

        Assert.Equal(good.OperationId, Assert.Single(pending).OperationId);
        Assert.False(File.Exists(bad));
        var kept = Assert.Single(Directory.GetFiles(_state.Quarantine));
        Assert.Equal("{ torn", File.ReadAllText(kept));
    }

    [Fact]
    public void Pending_StrayTemporaryFileOfAnInterruptedWrite_IsRemoved()
    {
        var journal = CreateJournal();
        var stray = Path.Combine(_state.Journal, $".{Cuid2Generator.Shared.Next()}.json.0123456789abcdef.tmp");
        File.WriteAllText(stray, "{");

        Assert.Empty(journal.Pending());
        Assert.False(File.Exists(stray));
    }

    [Fact]
    public void Step_CrashPointForStepN_FiresOnceForTheFirstOperationOfThatKind()
    {
        var crash = new ThrowingCrashPoint("bind", 2);
        var journal = CreateJournal(crash);
        var unbind = journal.Begin(NewEntry("unbind"));
        journal.Step(journal.Step(unbind, "a"), "b");
        var first = journal.Step(journal.Begin(NewEntry("bind")), "one");

        Assert.Throws<SimulatedCrashException>(() => journal.Step(first, "two"));
        var second = journal.Step(journal.Begin(NewEntry("bind")), "one");
        journal.Step(second, "two");

        Assert.True(crash.Fired);
        Assert.Equal(3, journal.Pending().Count);
    }

    [Fact]
    public void Step_CrashPointPastTheLastStep_NeverFires()
    {
        var crash = new ThrowingCrashPoint("reset", 2);
        var journal = CreateJournal(crash);

        journal.Complete(journal.Step(journal.Begin(NewEntry("reset")), "reset 0000:3b:00.0"));

        Assert.False(crash.Fired);
    }

    [Theory]
    [InlineData("bind:1", "bind", 1)]
    [InlineData("unbind:3", "unbind", 3)]
    [InlineData("attach:2", "attach", 2)]
    [InlineData("detach:1", "detach", 1)]
    [InlineData("delete:7", "delete", 7)]
    [InlineData("reset:1", "reset", 1)]
    public void ParseSpec_ContractForm_GivesOperationAndStep(string spec, string operation, int step)
    {
        Assert.Equal((operation, step), CrashAtStep.ParseSpec(spec));
    }

    [Theory]
    [InlineData("")]
    [InlineData("bind")]
    [InlineData("bind:0")]
    [InlineData("bind:-1")]
    [InlineData("bind:x")]
    [InlineData("format:1")]
    [InlineData("bind:1:2")]
    [InlineData("BIND:1")]
    public void ParseSpec_Garbage_ThrowsFormatException(string spec)
    {
        Assert.Throws<FormatException>(() => CrashAtStep.ParseSpec(spec));
    }
}
