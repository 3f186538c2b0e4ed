using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using PciPassthrough.Daemon.Hosting;
using PciPassthrough.Discovery;
using PciPassthrough.Registry;
using PciPassthrough.Sysfs;
using PciPassthrough.Tests.TestDoubles;
using PciPassthrough.Vfio;
using static PciPassthrough.Lifecycle.Tests.LifecycleTestKit;

namespace PciPassthrough.Lifecycle.Tests;

public sealed class LivenessCheckerTests : IDisposable
{
    private readonly SimulatedHost _host = new();

    public void Dispose() => _host.Dispose();

    private static AttachmentRecord Attachment(string instanceId = "vm-1", int? pid = null, long? startTime = null) =>
        new() { InstanceId = instanceId, Pid = pid, PidStartTime = startTime, AttachedAt = new DateTime(2026, 1, 2, 3, 4, 5, DateTimeKind.Utc) };

    // process mode

    [Fact]
    public async Task ProcessChecker_PidAliveWithRecordedStartTime_Running()
    {
        WriteProcess(_host.HostRoot, 500, startTime: 777);

        var state = await ProcessLiveness(_host).IsInstanceRunningAsync(Attachment(pid: 500, startTime: 777), CancellationToken.None);

        Assert.Equal(InstanceState.Running, state);
    }

    [Fact]
    public async Task ProcessChecker_PidMissing_Gone()
    {
        var state = await ProcessLiveness(_host).IsInstanceRunningAsync(Attachment(pid: 500, startTime: 777), CancellationToken.None);

        Assert.Equal(InstanceState.Gone, state);
    }

    [Fact]
    public async Task ProcessChecker_PidReusedByAProcessWithAnotherStartTime_Gone()
    {
        WriteProcess(_host.HostRoot, 500, startTime: 91_000);

        var state = await ProcessLiveness(_host).IsInstanceRunningAsync(Attachment(pid: 500, startTime: 777), CancellationToken.None);

        Assert.Equal(InstanceState.Gone, state);
    }

    [Fact]
    public async Task ProcessChecker_AttachmentWithoutPid_UnknownWhateverRuns()
    {
        WriteProcess(_host.HostRoot, 500, startTime: 777);

        var state = await ProcessLiveness(_host).IsInstanceRunningAsync(Attachment(), CancellationToken.None);

        Assert.Equal(InstanceState.Unknown, state);
    }

    [Fact]
    public async Task ProcessChecker_AttachmentMadeThroughTheManager_FollowsThatProcess()
    {
        var device = await RegisterAsync(_host, Nvme);
        WriteProcess(_host.HostRoot, 600, startTime: 12_345);
        await _host.Manager.AttachAsync(device.Id, new AttachCommand("vm-1", 600));
        var attachment = Record(_host, device.Id).Attachment!;
        var checker = ProcessLiveness(_host);

        Assert.Equal(InstanceState.Running, await checker.IsInstanceRunningAsync(attachment, CancellationToken.None));
        RemoveProcess(_host.HostRoot, 600);
        Assert.Equal(InstanceState.Gone, await checker.IsInstanceRunningAsync(attachment, CancellationToken.None));
        WriteProcess(_host.HostRoot, 600, startTime: 99_999);
        Assert.Equal(InstanceState.Gone, await checker.IsInstanceRunningAsync(attachment, CancellationToken.None));
    }

    // none mode

    [Fact]
    public async Task NoChecker_AnyAttachment_UnknownAlways()
    {
        WriteProcess(_host.HostRoot, 500, startTime: 777);
        var checker = new NoLivenessChecker(_host.Registry, _host.Discovery, _host.Kernel);

        Assert.Equal(InstanceState.Unknown, await checker.IsInstanceRunningAsync(Attachment(pid: 500, startTime: 777), CancellationToken.None));
        Assert.Equal(InstanceState.Unknown, await checker.IsInstanceRunningAsync(Attachment(pid: 501, startTime: 1), CancellationToken.None));
        Assert.Equal(InstanceState.Unknown, await checker.IsInstanceRunningAsync(Attachment(pid: 500, startTime: 1), CancellationToken.None));
        Assert.Equal(InstanceState.Unknown, await checker.IsInstanceRunningAsync(Attachment(), CancellationToken.None));
    }

    // http mode

    private IInstanceLivenessChecker HttpChecker(ServiceCollection services, Uri url, TimeSpan? timeout = null)
    {
        var configuration = new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["Liveness:Mode"] = "http",
            ["Liveness:Url"] = url.ToString(),
            ["Liveness:Timeout"] = (timeout ?? TimeSpan.FromSeconds(5)).ToString("c"),
        }).Build();
        services.AddSingleton(_host.Registry);
        services.AddSingleton<IPciDiscovery>(_host.Discovery);
        services.AddSingleton<ISysfs>(_host.Kernel);
        services.AddOptions<LivenessOptions>().Bind(configuration.GetSection(LivenessOptions.Section));
        services.AddLiveness();
        var checker = services.BuildServiceProvider().GetRequiredService<IInstanceLivenessChecker>();
        Assert.IsType<HttpLivenessChecker>(checker);
        return checker;
    }

    [Theory]
    [InlineData(200, InstanceState.Running)]
    [InlineData(404, InstanceState.Gone)]
    public async Task HttpChecker_OrchestratorAnswers_MapsStatus(int status, InstanceState expected)
    {
        await using var orchestrator = await Orchestrator.StartAsync(context =>
        {
            context.Response.StatusCode = status;
            return Task.CompletedTask;
        });
        var checker = HttpChecker([], orchestrator.Url);

        var state = await checker.IsInstanceRunningAsync(Attachment("vm-1"), CancellationToken.None);

        Assert.Equal(expected, state);
        Assert.Equal(["/instances/vm-1"], orchestrator.Requests);
    }

    [Fact]
    public async Task HttpChecker_OrchestratorKnowsOneInstance_RunningForItGoneForOthers()
    {
        await using var orchestrator = await Orchestrator.StartAsync(context =>
        {
            context.Response.StatusCode = context.Request.Path == "/instances/vm-1" ? 200 : 404;
            return Task.CompletedTask;
        });
        var checker = HttpChecker([], orchestrator.Url);

        Assert.Equal(InstanceState.Running, await checker.IsInstanceRunningAsync(Attachment("vm-1"), CancellationToken.None));
        Assert.Equal(InstanceState.Gone, await checker.IsInstanceRunningAsync(Attachment("vm-2"), CancellationToken.None));
    }

    [Fact]
    public async Task HttpChecker_ServerError_UnknownAfterRetries()
    {
        await using var orchestrator = await Orchestrator.StartAsync(context =>
        {
            context.Response.StatusCode = 500;
            return Task.CompletedTask;
        });
        var checker = HttpChecker([], orchestrator.Url);

        var state = await checker.IsInstanceRunningAsync(Attachment("vm-1"), CancellationToken.None);

        Assert.Equal(InstanceState.Unknown, state);
        // The first attempt and the two retries LivenessSetup configures.
        Assert.Equal(3, orchestrator.Requests.Count);
    }

    [Theory]
    [InlineData(204)]
    [InlineData(301)]
    [InlineData(401)]
    [InlineData(410)]
    public async Task HttpChecker_OtherStatus_Unknown(int status)
    {
        await using var orchestrator = await Orchestrator.StartAsync(context =>
        {
            context.Response.StatusCode = status;
            return Task.CompletedTask;
        });
        var checker = HttpChecker([], orchestrator.Url);

        Assert.Equal(InstanceState.Unknown, await checker.IsInstanceRunningAsync(Attachment("vm-1"), CancellationToken.None));
    }

    [Fact]
    public async Task HttpChecker_NoAnswerWithinTimeout_Unknown()
    {
        await using var orchestrator = await Orchestrator.StartAsync(context =>
            Task.Delay(Timeout.InfiniteTimeSpan, context.RequestAborted));
        var checker = HttpChecker([], orchestrator.Url, TimeSpan.FromMilliseconds(500));

        var state = await checker.IsInstanceRunningAsync(Attachment("vm-1"), CancellationToken.None);

        Assert.Equal(InstanceState.Unknown, state);
        Assert.NotEmpty(orchestrator.Requests);
    }

    [Fact]
    public async Task HttpChecker_ConnectionRefused_Unknown()
    {
        var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        var port = ((IPEndPoint)listener.LocalEndpoint).Port;
        listener.Stop();
        var checker = HttpChecker([], new Uri($"http://127.0.0.1:{port}/"), TimeSpan.FromSeconds(2));

        var state = await checker.IsInstanceRunningAsync(Attachment("vm-1"), CancellationToken.None);

        Assert.Equal(InstanceState.Unknown, state);
    }

    [Fact]
    public async Task HttpChecker_CallerCancels_Throws()
    {
        await using var orchestrator = await Orchestrator.StartAsync(context =>
            Task.Delay(Timeout.InfiniteTimeSpan, context.RequestAborted));
        var checker = HttpChecker([], orchestrator.Url, TimeSpan.FromMinutes(1));
        using var cancel = new CancellationTokenSource();

        var asking = checker.IsInstanceRunningAsync(Attachment("vm-1"), cancel.Token);
        await orchestrator.FirstRequest.WaitAsync(TimeSpan.FromSeconds(30));
        await cancel.CancelAsync();

        // Cancellation (the daemon stopping) is not an answer about the instance.
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => asking);
    }

    [Theory]
    [InlineData("ns:vm@host", "/instances/ns%3Avm%40host")]
    [InlineData("a/b c?d#e", "/instances/a%2Fb%20c%3Fd%23e")]
    [InlineData("../admin", "/instances/..%2Fadmin")]
    [InlineData("vm%2F1", "/instances/vm%252F1")]
    public async Task HttpChecker_InstanceId_EscapedAsOnePathSegment(string instanceId, string rawTarget)
    {
        await using var orchestrator = await Orchestrator.StartAsync(context =>
        {
            context.Response.StatusCode = 200;
            return Task.CompletedTask;
        });
        var checker = HttpChecker([], orchestrator.Url);

        Assert.Equal(InstanceState.Running, await checker.IsInstanceRunningAsync(Attachment(instanceId), CancellationToken.None));

        Assert.Equal([rawTarget], orchestrator.Requests);
    }

    [Fact]
    public async Task HttpChecker_UrlWithAPathWithoutTrailingSlash_AsksUnderThatPath()
    {
        await using var orchestrator = await Orchestrator.StartAsync(context =>
        {
            context.Response.StatusCode = 200;
            return Task.CompletedTask;
        });
        var checker = HttpChecker([], new Uri(orchestrator.Url, "orchestrator/v1"));

        Assert.Equal(InstanceState.Running, await checker.IsInstanceRunningAsync(Attachment("vm-1"), CancellationToken.None));

        Assert.Equal(["/orchestrator/v1/instances/vm-1"], orchestrator.Requests);
    }

    // what every mode shares: instances from records, and the holder scan

    [Fact]
    public async Task GetInstanceDevices_FromRecords_DevicesOfThatInstanceOnly()
    {
        var nvme = await RegisterAsync(_host, Nvme);
        var nvme2 = await RegisterAsync(_host, Nvme2);
        var nic = await RegisterAsync(_host, "0000:5e:00.0");
        var idle = await RegisterAsync(_host, "0000:5e:00.1");
        await _host.Manager.AttachAsync(nvme.Id, new AttachCommand("vm-1"));
        await _host.Manager.AttachAsync(nvme2.Id, new AttachCommand("vm-1"));
        await _host.Manager.AttachAsync(nic.Id, new AttachCommand("vm-2"));
        var checker = ProcessLiveness(_host);

        Assert.Equal([nvme.Id, nvme2.Id], checker.GetInstanceDevices("vm-1"));
        Assert.Equal([nic.Id], checker.GetInstanceDevices("vm-2"));
        Assert.Empty(checker.GetInstanceDevices("vm-3"));
        Assert.Empty(checker.GetInstanceDevices("VM-1"));
        var all = checker.ListAllInstanceDevices();
        Assert.Equal(["vm-1", "vm-2"], all.Keys.Order(StringComparer.Ordinal));
        Assert.Equal([nvme.Id, nvme2.Id], all["vm-1"]);
        Assert.Equal([nic.Id], all["vm-2"]);
        Assert.DoesNotContain(all.Values, ids => ids.Contains(idle.Id));

        await _host.Manager.DetachAsync(nvme2.Id, new DetachCommand("vm-1"));
        await _host.Manager.DetachAsync(nic.Id, new DetachCommand("vm-2"));

        Assert.Equal([nvme.Id], checker.GetInstanceDevices("vm-1"));
        Assert.Equal(["vm-1"], checker.ListAllInstanceDevices().Keys);
    }

    [Fact]
    public void ListAllInstanceDevices_NothingAttached_Empty()
    {
        Assert.Empty(ProcessLiveness(_host).ListAllInstanceDevices());
    }

    [Fact]
    public async Task DetectSuspiciousVmmProcesses_HolderOfAnUnattachedBoundDevice_Reported()
    {
        var device = await RegisterAsync(_host, Nvme);
        await _host.Manager.BindToVfioAsync(device.Id, new VfioRequest());
        WriteProcess(_host.HostRoot, 700, 1, "rogue-vmm", "/dev/vfio/21");

        var suspicious = ProcessLiveness(_host).DetectSuspiciousVmmProcesses();

        var process = Assert.Single(suspicious);
        Assert.Equal(700, process.Pid);
        Assert.Equal("rogue-vmm", process.Command);
        Assert.Equal("/dev/vfio/21", process.VfioGroup);
    }

    [Fact]
    public async Task DetectSuspiciousVmmProcesses_HolderIsTheAttachmentsPid_NotReported()
    {
        var device = await RegisterAsync(_host, Nvme);
        WriteProcess(_host.HostRoot, 700, 1, "qemu-system-x86");
        await _host.Manager.AttachAsync(device.Id, new AttachCommand("vm-1", 700));
        WriteProcess(_host.HostRoot, 700, 1, "qemu-system-x86", "/dev/vfio/21");

        Assert.Empty(ProcessLiveness(_host).DetectSuspiciousVmmProcesses());
    }

    [Fact]
    public async Task DetectSuspiciousVmmProcesses_HolderWithAnotherPidThanTheAttachment_Reported()
    {
        var device = await RegisterAsync(_host, Nvme);
        WriteProcess(_host.HostRoot, 700, 1, "qemu-system-x86", "/dev/vfio/21");
        await _host.Manager.AttachAsync(device.Id, new AttachCommand("vm-1", 700));
        WriteProcess(_host.HostRoot, 700, 1, "qemu-system-x86", "/dev/vfio/21");
        WriteProcess(_host.HostRoot, 701, 1, "intruder", "/dev/vfio/21");

        var process = Assert.Single(ProcessLiveness(_host).DetectSuspiciousVmmProcesses());

        Assert.Equal(701, process.Pid);
        Assert.Equal("intruder", process.Command);
        Assert.Equal("/dev/vfio/21", process.VfioGroup);
        Assert.Contains("700", process.Reason, StringComparison.Ordinal);
    }

    [Fact]
    public async Task DetectSuspiciousVmmProcesses_AttachmentWithoutPid_HoldersOfItsGroupNotSuspicious()
    {
        var device = await RegisterAsync(_host, Nvme);
        await _host.Manager.AttachAsync(device.Id, new AttachCommand("vm-1"));
        WriteProcess(_host.HostRoot, 700, 1, "qemu-system-x86", "/dev/vfio/21");
        WriteProcess(_host.HostRoot, 701, 1, "helper", "/dev/vfio/21");

        Assert.Empty(ProcessLiveness(_host).DetectSuspiciousVmmProcesses());
    }

    [Fact]
    public async Task DetectSuspiciousVmmProcesses_OnlyVfioGroupNodesCount()
    {
        var device = await RegisterAsync(_host, Nvme);
        await _host.Manager.BindToVfioAsync(device.Id, new VfioRequest());
        WriteProcess(_host.HostRoot, 700, 1, "container-mgr", "/dev/vfio/vfio");
        WriteProcess(_host.HostRoot, 701, 1, "nvme-cli", "/dev/nvme1");
        WriteProcess(_host.HostRoot, 702, 1, "qemu", "/dev/vfio/99");

        Assert.Empty(ProcessLiveness(_host).DetectSuspiciousVmmProcesses());
    }

    [Fact]
    public async Task DetectSuspiciousVmmProcesses_HolderOfAGroupOfNoRegisteredDevice_Reported()
    {
        await RegisterAsync(_host, Nvme);
        File.WriteAllText(Path.Combine(_host.HostRoot, "dev", "vfio", "77"), "");
        WriteProcess(_host.HostRoot, 700, 1, "stray", "/dev/vfio/77");

        var process = Assert.Single(ProcessLiveness(_host).DetectSuspiciousVmmProcesses());

        Assert.Equal(700, process.Pid);
        Assert.Equal("/dev/vfio/77", process.VfioGroup);
    }

    [Fact]
    public async Task DetectSuspiciousVmmProcesses_TwoDevicesAttachedToTwoVmmsInOneGroup_EachVmmExpected()
    {
        // The GPU and its audio function registered separately, both attached, to two pids.
        var manager = Manager(_host, new VfioOptions { GroupBindOnAttach = true, VerifyPollInterval = TimeSpan.FromMilliseconds(2) });
        var gpu = await RegisterAsync(_host, Gpu);
        var audio = await RegisterAsync(_host, GpuAudio);
        WriteProcess(_host.HostRoot, 800, 1, "qemu-a");
        WriteProcess(_host.HostRoot, 801, 1, "qemu-b");
        await manager.AttachAsync(gpu.Id, new AttachCommand("vm-a", 800));
        await manager.AttachAsync(audio.Id, new AttachCommand("vm-b", 801));
        WriteProcess(_host.HostRoot, 800, 1, "qemu-a", "/dev/vfio/11");
        WriteProcess(_host.HostRoot, 801, 1, "qemu-b", "/dev/vfio/11");
        WriteProcess(_host.HostRoot, 802, 1, "qemu-c", "/dev/vfio/11");

        var process = Assert.Single(ProcessLiveness(_host).DetectSuspiciousVmmProcesses());

        Assert.Equal(802, process.Pid);
    }

    /// <summary>A minimal orchestrator: Kestrel on a free loopback port, recording raw request targets.</summary>
    private sealed class Orchestrator : IAsyncDisposable
    {
        private readonly WebApplication _app;
        private readonly TempDirectory _contentRoot;
        private readonly ConcurrentQueue<string> _requests = new();
        private readonly TaskCompletionSource _first = new(TaskCreationOptions.RunContinuationsAsynchronously);

        private Orchestrator(WebApplication app, TempDirectory contentRoot)
        {
            _app = app;
            _contentRoot = contentRoot;
        }

        public Uri Url { get; private set; } = null!;

        public IReadOnlyList<string> Requests => [.. _requests];

        public Task FirstRequest => _first.Task;

        public static async Task<Orchestrator> StartAsync(RequestDelegate respond)
        {
            // A content root of its own: the test output folder holds the daemon's appsettings.json.
            var contentRoot = new TempDirectory("pcipt-orchestrator");
            var builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions { ContentRootPath = contentRoot.Path });
            builder.WebHost.UseUrls("http://127.0.0.1:0");
            builder.Logging.ClearProviders();
            var app = builder.Build();
            var orchestrator = new Orchestrator(app, contentRoot);
            app.Run(context =>
            {
                orchestrator._requests.Enqueue(context.Features.GetRequiredFeature<IHttpRequestFeature>().RawTarget);
                orchestrator._first.TrySetResult();
                return respond(context);
            });
            await app.StartAsync();
            orchestrator.Url = new Uri(app.Urls.Single());
            return orchestrator;
        }

        public async ValueTask DisposeAsync()
        {
            await _app.StopAsync();
            await _app.DisposeAsync();
            _contentRoot.Dispose();
        }
    }
}
