using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;
using Microsoft.Extensions.Time.Testing;
using PciPassthrough.Devices;
using PciPassthrough.Simulation;
using PciPassthrough.Simulation.Tests;
using PciPassthrough.Sysfs;
using PciPassthrough.Tests.TestDoubles;

namespace PciPassthrough.Vfio.Tests;

public sealed class BoundedKernelWriterTests : IDisposable
{
    private static readonly string[] HangingDevices = ["0000:3b:00.0", "0000:d8:00.0", "0000:5e:00.0", "0000:5e:00.1"];
    private static readonly Dictionary<string, string> DriverOf = new()
    {
        ["0000:3b:00.0"] = "nvme",
        ["0000:d8:00.0"] = "nvme",
        ["0000:5e:00.0"] = "i40e",
        ["0000:5e:00.1"] = "i40e",
    };

    private readonly TempDirectory _dir = new("pcipt-writer");
    private readonly HostTree _tree;
    private readonly SimulatedKernel _kernel;
    private readonly InterceptingSysfs _sysfs;

    public BoundedKernelWriterTests()
    {
        GpuServerFixture.WriteTo(_dir.Path);
        _tree = new HostTree(_dir.Path);
        _kernel = new SimulatedKernel(_dir.Path);
        _sysfs = new InterceptingSysfs(_kernel);
    }

    public void Dispose()
    {
        // Lets any write still stuck in the simulated kernel return before the tree goes away.
        _kernel.ReleaseHangs();
        _kernel.Dispose();
        _dir.Dispose();
    }

    private BoundedKernelWriter CreateWriter(TimeSpan timeout, TimeProvider? time = null) =>
        new(_sysfs, Options.Create(new VfioOptions { OperationTimeout = timeout }), time ?? TimeProvider.System,
            NullLogger<BoundedKernelWriter>.Instance);

    [Fact]
    public async Task WriteAsync_KernelAccepts_WriteTakesEffect()
    {
        var writer = CreateWriter(TimeSpan.FromSeconds(5));

        await writer.WriteAsync("/sys/bus/pci/drivers/nvme/unbind", "0000:3b:00.0");

        Assert.Null(_tree.DriverOf("0000:3b:00.0"));
        Assert.Equal(0, writer.StuckWrites);
    }

    [Fact]
    public async Task WriteAsync_KernelRefuses_ThrowsItsIOExceptionWithTheErrno()
    {
        var writer = CreateWriter(TimeSpan.FromSeconds(5));

        var e = await Assert.ThrowsAsync<IOException>(() => writer.WriteAsync("/sys/bus/pci/drivers/nvme/unbind", "0000:17:00.0"));

        Assert.Equal(KernelErrno.ENODEV, e.HResult);
        Assert.Equal(0, writer.StuckWrites);
    }

    [Fact]
    public async Task WriteAsync_WriteNeverReturns_TimesOutExactlyAtTheConfiguredTimeout()
    {
        _kernel.AddFault(PciAddress.Parse("0000:3b:00.0"), new SimulatedFault.UnbindHangs());
        var time = new FakeTimeProvider();
        var timeout = TimeSpan.FromSeconds(10);
        var writer = CreateWriter(timeout, time);

        var write = writer.WriteAsync("/sys/bus/pci/drivers/nvme/unbind", "0000:3b:00.0");
        time.Advance(timeout - TimeSpan.FromMilliseconds(1));
        var earlyCompletion = await Task.WhenAny(write, Task.Delay(200));
        time.Advance(TimeSpan.FromMilliseconds(1));

        Assert.NotSame(write, earlyCompletion);
        var e = await Assert.ThrowsAsync<KernelWriteTimeoutException>(() => write);
        Assert.Equal("/sys/bus/pci/drivers/nvme/unbind", e.Path);
        Assert.Equal(1, writer.StuckWrites);
        Assert.Equal("nvme", _tree.DriverOf("0000:3b:00.0"));
        Assert.Equal(timeout, writer.Timeout);
    }

    [Fact]
    public async Task WriteAsync_StuckWritesFinishLater_StuckWritesDropsBackToZero()
    {
        _kernel.AddFault(PciAddress.Parse("0000:3b:00.0"), new SimulatedFault.UnbindHangs());
        var writer = CreateWriter(TimeSpan.FromMilliseconds(200));

        await Assert.ThrowsAsync<KernelWriteTimeoutException>(() => writer.WriteAsync("/sys/bus/pci/drivers/nvme/unbind", "0000:3b:00.0"));
        Assert.Equal(1, writer.StuckWrites);
        _kernel.ReleaseHangs();

        await Wait.UntilAsync(() => writer.StuckWrites == 0, "the stuck write to return");
        Assert.Null(_tree.DriverOf("0000:3b:00.0"));
    }

    [Fact]
    public async Task WriteAsync_FourWritesStuck_ThreadPoolStaysUsable()
    {
        foreach (var device in HangingDevices)
        {
            _kernel.AddFault(PciAddress.Parse(device), new SimulatedFault.UnbindHangs());
        }

        var writer = CreateWriter(TimeSpan.FromMilliseconds(300));

        var writes = HangingDevices.Select(d => writer.WriteAsync($"/sys/bus/pci/drivers/{DriverOf[d]}/unbind", d)).ToList();
        foreach (var write in writes)
        {
            await Assert.ThrowsAsync<KernelWriteTimeoutException>(() => write);
        }

        Assert.Equal(4, writer.StuckWrites);
        var work = Enumerable.Range(0, 50).Select(i => Task.Run(() =>
        {
            Thread.Sleep(5);
            return i;
        })).ToList();
        var done = await Task.WhenAll(work).WaitAsync(Wait.Guard);
        Assert.Equal(Enumerable.Range(0, 50), done);

        // The stuck writes sit on threads of their own, never on the pool's.
        Assert.Equal(4, _sysfs.Writes.Count);
        Assert.All(_sysfs.Writes, w => Assert.False(w.OnThreadPool, $"{w.Path} ran on a thread-pool thread"));
        Assert.All(HangingDevices, d => Assert.Equal(DriverOf[d], _tree.DriverOf(d)));

        _kernel.ReleaseHangs();
        await Wait.UntilAsync(() => writer.StuckWrites == 0, "the stuck writes to return");
        Assert.All(HangingDevices, d => Assert.Null(_tree.DriverOf(d)));
    }

    [Fact]
    public async Task WriteAsync_WhileOthersAreStuck_OtherWritesStillComplete()
    {
        _kernel.AddFault(PciAddress.Parse("0000:3b:00.0"), new SimulatedFault.UnbindHangs());
        var writer = CreateWriter(TimeSpan.FromMilliseconds(200));
        await Assert.ThrowsAsync<KernelWriteTimeoutException>(() => writer.WriteAsync("/sys/bus/pci/drivers/nvme/unbind", "0000:3b:00.0"));

        await writer.WriteAsync("/sys/bus/pci/drivers/nvme/unbind", "0000:d8:00.0");

        Assert.Null(_tree.DriverOf("0000:d8:00.0"));
        Assert.Equal(1, writer.StuckWrites);
    }

    [Fact]
    public async Task WriteAsync_Cancelled_StopsWaiting()
    {
        _kernel.AddFault(PciAddress.Parse("0000:3b:00.0"), new SimulatedFault.UnbindHangs());
        var writer = CreateWriter(TimeSpan.FromSeconds(30));
        using var cancel = new CancellationTokenSource();

        var write = writer.WriteAsync("/sys/bus/pci/drivers/nvme/unbind", "0000:3b:00.0", cancel.Token);
        await cancel.CancelAsync();

        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => write);
        Assert.Equal("nvme", _tree.DriverOf("0000:3b:00.0"));
    }
}
