using Microsoft.Extensions.Configuration.CommandLine;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Options;
using PciPassthrough.Daemon.Api.Contracts;
using PciPassthrough.Daemon.Api.Problems;
using PciPassthrough.Daemon.Api;
using PciPassthrough.Discovery;
using PciPassthrough.HostReadiness;
using PciPassthrough.Journal;
using PciPassthrough.Lifecycle;
using PciPassthrough.PciIds;
using PciPassthrough.Reconcile;
using PciPassthrough.Registry;
using PciPassthrough.Simulation;
using PciPassthrough.Storage;
using PciPassthrough.Sysfs;
using PciPassthrough.Vfio;
using Serilog;

namespace PciPassthrough.Daemon.Hosting;

/// <summary>The daemon's composition: services, middleware and endpoints.</summary>
public static class PassthroughHostingExtensions
{
    public const string EnvironmentPrefix = "PCIPT_";

    public static WebApplicationBuilder AddPassthrough(this WebApplicationBuilder builder)
    {
        AddPrefixedEnvironment(builder.Configuration);
        ListenAddressPolicy.Validate(builder.Configuration);
        StaleUnixSockets.Remove(builder.Configuration);
        builder.AddLogging();
        builder.Services.AddSystemd();

        var services = builder.Services;
        services.AddOptions<HostSystemOptions>().BindConfiguration(HostSystemOptions.Section).ValidateDataAnnotations().ValidateOnStart();
        services.AddOptions<StateOptions>().BindConfiguration(StateOptions.Section).ValidateOnStart();
        services.AddOptions<VfioOptions>().BindConfiguration(VfioOptions.Section).ValidateDataAnnotations().ValidateOnStart();
        services.AddOptions<SimulateOptions>().BindConfiguration(SimulateOptions.Section).ValidateOnStart();
        services.AddOptions<ReconcileOptions>().BindConfiguration(ReconcileOptions.Section).ValidateDataAnnotations().ValidateOnStart();
        services.AddOptions<ServerOptions>().BindConfiguration(ServerOptions.Section).ValidateDataAnnotations().ValidateOnStart();
        services.AddOptions<LivenessOptions>().BindConfiguration(LivenessOptions.Section).ValidateDataAnnotations().ValidateOnStart();

        services.TryAddSingleton(TimeProvider.System);
        services.AddSingleton(sp => StateDirectory.Resolve(
            sp.GetRequiredService<IOptions<StateOptions>>(), sp.GetRequiredService<ILogger<StateDirectory>>()));
        services.AddSingleton(HostSysfsFactory.Create);
        services.AddSingleton<PciIdsProvider>();
        services.AddSingleton<IPciDiscovery, PciDiscovery>();
        services.AddSingleton<IDeviceStore, JsonFileDeviceStore>();
        services.AddSingleton<DeviceRegistry>();
        services.AddSingleton(CrashPoints.Create);
        services.AddSingleton<OperationJournal>();
        services.AddSingleton<BoundedKernelWriter>();
        services.AddSingleton<SysfsVfioBinder>();
        services.AddSingleton<IServiceControl>(sp =>
            sp.GetRequiredService<IOptions<HostSystemOptions>>().Value.Mode == HostMode.Simulated
                ? new SimulatedServiceControl(sp.GetRequiredService<ISysfs>())
                : ActivatorUtilities.CreateInstance<SystemctlServiceControl>(sp));
        services.AddSingleton<DeviceManager>();
        services.AddSingleton<IDeviceManager>(sp => sp.GetRequiredService<DeviceManager>());
        services.AddSingleton<HostInspector>();
        services.AddPassthroughMetrics();
        services.AddLiveness();
        services.AddSingleton<ReconcileRunner>();
        services.AddSingleton<StartupState>();
        services.AddSingleton<IStartupGate>(sp => sp.GetRequiredService<StartupState>());
        services.AddHostedService<StartupService>();
        services.AddHostedService<ReconcileService>();
        services.AddHostedService<UnixSocketPermissions>();

        services.ConfigureHttpJsonOptions(o =>
        {
            o.SerializerOptions.PropertyNamingPolicy = System.Text.Json.JsonNamingPolicy.SnakeCaseLower;
            o.SerializerOptions.TypeInfoResolverChain.Insert(0, ApiJsonContext.Default);
        });
        services.Configure<RouteHandlerOptions>(o => o.ThrowOnBadRequest = true);
        builder.WebHost.ConfigureKestrel(k =>
        {
            k.Limits.MaxRequestBodySize = JsonBody.MaxBytes;
            k.ConfigureEndpointDefaults(listen => listen.Use(RequestTargetNulFilter.Wrap));
        });
        services.AddProblemDetails(o => o.CustomizeProblemDetails = c => ProblemShape.Complete(c.ProblemDetails, c.HttpContext));
        services.AddExceptionHandler<PassthroughExceptionHandler>();
        services.AddPassthroughOpenApi();
        return builder;
    }

    public static WebApplication UsePassthrough(this WebApplication app)
    {
        // Request logging first, so it records the status the exception handler settles on.
        app.UsePassthroughHttpMetrics();
        app.UseSerilogRequestLogging(o =>
            o.MessageTemplate = "{RequestMethod} {RequestPath} responded {StatusCode} in {Elapsed:0.0} ms");
        app.UseExceptionHandler();
        app.UseStatusCodePages();
        return app;
    }

    public static WebApplication MapPassthroughApi(this WebApplication app)
    {
        app.MapOpenApi("/openapi/{documentName}.json");
        app.UseSwaggerUI(o =>
        {
            o.SwaggerEndpoint("/openapi/v1.json", "PciPassthrough v1");
            o.RoutePrefix = "swagger";
            o.DocumentTitle = "PciPassthrough API";
        });
        app.MapPassthroughMetrics();
        app.MapHealthApi();
        app.MapDevicesApi();
        app.MapReconcileApi();
        app.MapHostApi();
        return app;
    }

    /// <summary>
    /// <c>PCIPT_</c>-prefixed variables rank with the plain ones: above appsettings.json, below the
    /// command line, so a flag given by hand always wins.
    /// </summary>
    private static void AddPrefixedEnvironment(ConfigurationManager configuration)
    {
        IConfigurationBuilder config = configuration;
        var sources = config.Sources;
        var commandLine = sources.OfType<CommandLineConfigurationSource>().FirstOrDefault();
        var index = commandLine is null ? sources.Count : sources.IndexOf(commandLine);
        sources.Insert(index, new Microsoft.Extensions.Configuration.EnvironmentVariables.EnvironmentVariablesConfigurationSource
        {
            Prefix = EnvironmentPrefix,
        });
    }
}
